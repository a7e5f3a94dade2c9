"""One Prometheus registry and one endpoint per process.

Every service's metrics module registers its families on the registry the composition
root gives it (``process_registry``: with the process, platform and GC collectors), and
``MetricsEndpoint`` serves that registry on ``TRACE_METRICS_LISTEN``. Gauges read from
PostgreSQL go through ``LoopSnapshot``: the scrape thread asks the event loop for one
query at most once per ``max_age`` seconds, however many scrapes arrive, and serves the
last snapshot when the loop does not answer in time (a scrape never stalls the loop).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)

T = TypeVar("T")


def process_registry() -> CollectorRegistry:
    """A fresh registry with the process, platform and GC collectors (what the default
    registry carries); one per process, or per platform when tests start several."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class LoopSnapshot(Generic[T]):
    """A value read on the event loop, cached for ``max_age`` seconds, fetched from any thread.

    ``get`` is called by collectors in the HTTP server's threads. Concurrent callers share
    one read (a lock); a caller on the loop's own thread, or a loop that does not answer
    within ``timeout``, gets the cached value (None before the first read).
    """

    def __init__(
        self,
        read: Callable[[], Awaitable[T]],
        max_age: float = 1.0,
        timeout: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._timeout = timeout
        self._loop = loop or _running_loop()
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at = float("-inf")

    def get(self) -> T | None:
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            return self._value  # blocking here would wait for ourselves
        with self._lock:
            if time.monotonic() - self._read_at < self._max_age:
                return self._value
            future = asyncio.run_coroutine_threadsafe(self._call(), loop)
            try:
                self._value = future.result(self._timeout)
            except Exception:
                future.cancel()  # stale rather than nothing; the next scrape tries again
            self._read_at = time.monotonic()
            return self._value

    async def _call(self) -> T:
        return await self._read()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class MetricsEndpoint:
    """``/metrics`` of ``registry`` on ``listen`` (host:port; port 0 picks a free one)."""

    def __init__(self, registry: CollectorRegistry, listen: str) -> None:
        host, port = listen.rsplit(":", 1)
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(int(port), host.strip("[]"), registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
