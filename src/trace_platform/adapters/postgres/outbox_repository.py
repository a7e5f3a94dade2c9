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
# Runs on the claiming connection, inside the transaction that marks the rows done: what
# it writes (DAG routing's tasks) commits with them or not at all. Returns the ids of rows
# it could not handle: they stay pending, with backoff, and the rest of the batch goes on.
Route = Callable[[asyncpg.Connection, list[OutboxRow]], Awaitable[set[int]]]


class OutboxRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("outbox")

    async def deliver_batch(self, limit: int, deliver: Deliver, route: Route | None = None) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._sql["claim_pending"], limit)
            if not rows:
                return 0
            batch = [OutboxRow(r["id"], r["kind"], r["queue"], json.loads(r["payload"])) for r in rows]
            ids = [r.id for r in batch]
            try:
                held = await route(conn, batch) if route is not None else set()
                await deliver(batch)
            except Exception as exc:
                await conn.execute(self._sql["mark_failed"], ids, type(exc).__name__)
                raise
            if held:
                await conn.execute(self._sql["mark_failed"], sorted(held), "RoutingFailed")
            await conn.execute(self._sql["mark_done"], [i for i in ids if i not in held])
            return len(batch)

    async def pending(self) -> int:
        return int(await self._pool.fetchval(self._sql["count_pending"]))
