"""Outbox delivery: claim pending rows, hand them to a sink, mark them done, in one
transaction, so a crash at any point leaves them pending (at-least-once)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries


@dataclass(frozen=True)
class OutboxRow:
    id: int
    kind: str
    queue: str | None
    payload: dict[str, Any]


Deliver = Callable[[list[OutboxRow]], Awaitable[None]]


class OutboxRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("outbox")

    async def deliver_batch(self, limit: int, deliver: Deliver) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._sql["claim_pending"], limit)
            if not rows:
                return 0
            batch = [OutboxRow(r["id"], r["kind"], r["queue"], json.loads(r["payload"])) for r in rows]
            ids = [r.id for r in batch]
            try:
                await deliver(batch)
            except Exception as exc:
                await conn.execute(self._sql["mark_failed"], ids, type(exc).__name__)
                raise
            await conn.execute(self._sql["mark_done"], ids)
            return len(batch)

    async def pending(self) -> int:
        return int(await self._pool.fetchval(self._sql["count_pending"]))
