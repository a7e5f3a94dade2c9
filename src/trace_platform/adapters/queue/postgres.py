"""Postgres wake-up queue: ``FOR UPDATE SKIP LOCKED`` receive, ``LISTEN/NOTIFY``
wake-ups (a trigger notifies on insert), and plain polling as the fallback when the
listening connection is lost."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.notify import NotifyListener
from trace_platform.adapters.queue.base import Message

CHANNEL = "trace_queue"


class PostgresQueue:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("queue")
        self._listener = NotifyListener(pool, CHANNEL)  # a trigger notifies on insert

    def stores_in(self, pool: asyncpg.Pool) -> bool:
        """Whether this queue's messages live in ``pool``'s database (the same pool), so a
        transaction there can write them beside the state they wake up for."""
        return self._pool is pool

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
        await self._listener.wait(queue, timeout)

    async def close(self) -> None:
        await self._listener.close()
