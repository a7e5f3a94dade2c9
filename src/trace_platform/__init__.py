"""Trace: sync, query and alert on blockchain data.

The import package is ``trace_platform`` rather than ``trace`` because the Python
standard library already owns the module name ``trace``; an installed package of that
name would lose to it on ``sys.path``.
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trace_platform.clients.api.connect import aconnect, connect

__all__ = ["__version__", "aconnect", "connect"]


def __getattr__(name: str) -> Any:
    # Lazy: `import trace_platform` (every CLI start) must not import grpc and the clients.
    if name in ("connect", "aconnect"):
        from trace_platform.clients.api import connect as module

        return getattr(module, name)
    raise AttributeError(name)
