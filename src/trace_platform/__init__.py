"""Trace: sync, query and alert on blockchain data.

The import package is ``trace_platform`` rather than ``trace`` because the Python
standard library already owns the module name ``trace``; an installed package of that
name would lose to it on ``sys.path``.
"""

__version__ = "0.1.0"
