"""The few defaults the command line needs before it knows which command runs.

Kept apart from core.config (a dozen dataclasses, slow to import) so that `trace --help`
does not pay for settings it never reads; core.config re-exports them.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_ADDR = "127.0.0.1:50051"
# The one organisation of a Lite installation.
LITE_ORG_ID = "00000000-0000-0000-0000-000000000001"
# The largest gRPC message a server accepts and a client receives (QueryArrow fills it).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def default_data_dir() -> Path:
    return Path.home() / ".trace" / "lite"
