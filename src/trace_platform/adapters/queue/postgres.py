"""Postgres wake-up queue: ``FOR UPDATE SKIP LOCKED`` receive, ``LISTEN/NOTIFY``
wake-ups (a trigger notifies on insert), and plain polling as the fallback when the
listening connection is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.queue.base import Message

log = logging.getLogger(__name__)
CHANNEL = "trace_queue"


class PostgresQueue:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("queue")
        self._events: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._listener: asyncpg.Connection | None = None
        self._listen_lock = asyncio.Lock()

    async def publish(self, queue: str, payloads: Sequence[dict[str, Any]]) -> None:
        if payloads:
            await self._pool.execute(self._sql["publish"], queue, [json.dumps(p) for p in payloads])

    async def receive(self, queue: str, max_messages: int, visibility_seconds: float) -> list[Message]:
        rows = await self._pool.fetch(self._sql["receive"], queue, max_messages, visibility_seconds)
        return [Message(str(r["id"]), json.loads(r["payload"]), r["receive_count"]) for r in rows]

    async def ack(self, queue: str, messages: Sequence[Message]) -> None:
        if messages:
            await self._pool.execute(self._sql["ack"], [int(m.id) for m in messages])

    async def change_visibility(self, queue: str, messages: Sequence[Message], seconds: float) -> None:
        if messages:
            await self._pool.execute(self._sql["change_visibility"], [int(m.id) for m in messages], seconds)

    async def depth(self, queue: str) -> int:
        return int(await self._pool.fetchval(self._sql["depth"], queue))

    async def wait(self, queue: str, timeout: float) -> None:
        await self._ensure_listening()
        event = self._events[queue]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def _ensure_listening(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        async with self._listen_lock:
            if self._listener is not None and not self._listener.is_closed():
                return
            try:
                conn = await self._pool.acquire()
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listener = conn
            except (OSError, asyncpg.PostgresError) as exc:
                # Polling still works; we try to listen again on the next wait.
                log.warning("queue listen failed, polling", extra={"error": type(exc).__name__})

    def _on_notify(self, _conn: object, _pid: int, _channel: str, queue: str) -> None:
        self._events[queue].set()

    async def close(self) -> None:
        if self._listener is not None:
            conn, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await conn.remove_listener(CHANNEL, self._on_notify)
            await self._pool.release(conn)
