"""LISTEN on one PostgreSQL channel and wake whoever waits for a payload.

Notifications are wake-ups only: a waiter that misses one (the listening connection was
lost, or nobody was listening) still returns after its timeout and polls, so correctness
never depends on a NOTIFY arriving. The listening connection is taken lazily on the
first wait and given back on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

import asyncpg

log = logging.getLogger(__name__)


class NotifyListener:
    def __init__(self, pool: asyncpg.Pool, channel: str) -> None:
        self._pool = pool
        self.channel = channel
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    def set(self, payload: str) -> None:
        """Wake this process's waiters for ``payload`` at once (no round trip)."""
        self._events[payload].set()

    async def wait(self, payload: str, timeout: float) -> None:
        """Return when ``payload`` is notified (or was since the last wait), else after ``timeout``."""
        await self._ensure_listening()
        event = self._events[payload]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def _ensure_listening(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            if self._closed:
                return
            try:
                conn = await self._pool.acquire()
            except (OSError, asyncpg.PostgresError) as exc:
                # Polling still works; we try to listen again on the next wait.
                log.warning("listen failed, polling", extra={"channel": self.channel, "error": type(exc).__name__})
                return
            if self._closed:  # closed while we waited for the connection
                await self._pool.release(conn)
                return
            try:
                await conn.add_listener(self.channel, self._on_notify)
            except BaseException as exc:
                # Cancelled (a loop stopping) or refused: the connection goes back either
                # way, or the pool's close would wait for it forever.
                await self._pool.release(conn)
                if not isinstance(exc, OSError | asyncpg.PostgresError):
                    raise
                log.warning("listen failed, polling", extra={"channel": self.channel, "error": type(exc).__name__})
                return
            self._conn = conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._events[payload].set()

    async def close(self) -> None:
        self._closed = True  # a wait still under way polls from now on; none listens again
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.remove_listener(self.channel, self._on_notify)
            await self._pool.release(conn)
