"""A real HTTP webhook receiver on loopback (http.server in a thread) that records
every request and can fail the first try of each idempotency key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    idempotency_key: str
    body: dict[str, Any]
    status: int


@dataclass
class Receiver:
    port: int = 0
    fail_first: bool = False
    always_status: int | None = None
    requests: list[Received] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def respond(self, path: str, key: str, body: dict[str, Any]) -> int:
        with self._lock:
            if self.always_status is not None:
                status = self.always_status
            elif self.fail_first and key not in self._seen:
                status = 500
            else:
                status = 200
            self._seen.add(key)
            self.requests.append(Received(path, key, body, status))
            return status

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.status == 200]


@contextmanager
def webhook_receiver(**kwargs: Any) -> Iterator[Receiver]:
    receiver = Receiver(**kwargs)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            status = receiver.respond(self.path, self.headers.get("Idempotency-Key", ""), body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
