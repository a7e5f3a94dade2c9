"""An embedded PostgreSQL for Lite when no ``TRACE_DATABASE_URL`` is given.

Uses the ``pgserver`` package (PostgreSQL 16 binaries from PyPI, Unix socket only).
PostgreSQL refuses to run as root; when run as root, pgserver runs the server as a
dedicated ``pgserver`` system user it creates, so this works for root too.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A socket path must stay under ~100 bytes; pgserver puts it in the data dir.
        if len(str(self.data_dir)) > 80:
            raise RuntimeError(f"data directory path too long for a PostgreSQL socket: {self.data_dir}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR under root
            self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        uri: str = self._server.get_uri()
        log.info("embedded postgres started", extra={"data_dir": str(self.data_dir)})
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
