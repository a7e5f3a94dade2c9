"""Compaction state of chain_sync streams (migration 0015). The cutover happens in the
compact task's completion trigger, inside the normal fenced completion transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from trace_platform.adapters.postgres import queries


@dataclass(frozen=True)
class CompactableStream:
    job_id: str
    org_id: str
    name: str
    spec_json: str
    completed: bool
    dataset_key: str
    dataset_uuid: str
    published_end: int | None


@dataclass(frozen=True)
class LedgerRange:
    range_start: int
    range_end: int
    task_id: str
    dataset_version: str


@dataclass(frozen=True)
class PlannedCompaction:
    task_id: str
    config: dict[str, object]
    dataset_version: str
    config_hash: str
    range_start: int
    range_end: int
    inputs: tuple[LedgerRange, ...]


class CompactionRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("compaction")

    async def compactable_streams(self, limit: int) -> list[CompactableStream]:
        rows = await self._pool.fetch(self._sql["compactable_streams"], limit)
        return [
            CompactableStream(
                r["job_id"],
                r["org_id"],
                r["name"],
                r["spec"],
                r["completed"],
                r["dataset_key"],
                r["dataset_uuid"],
                r["published_end"],
            )
            for r in rows
        ]

    async def candidates(self, stream: CompactableStream, below_end: int, limit: int) -> list[LedgerRange]:
        rows = await self._pool.fetch(
            self._sql["candidate_ranges"], stream.job_id, stream.dataset_key, below_end, limit
        )
        return [LedgerRange(r["range_start"], r["range_end"], r["task_id"], r["dataset_version"]) for r in rows]

    async def create(self, stream: CompactableStream, planned: Sequence[PlannedCompaction], max_attempts: int) -> int:
        """Create the compactions under the stream's lock; 0 when another Dispatcher holds it.
        The candidates are read again under the lock: a run planned by a concurrent pass
        is not planned twice."""
        created = 0
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._sql["lock_stream"], stream.job_id, stream.dataset_key) is None:
                return 0
            await conn.execute(self._sql["retire_dead"], stream.job_id, stream.dataset_key)
            end = max((p.range_end for p in planned), default=0)
            live = {
                (r["range_start"], r["range_end"], r["dataset_version"])
                for r in await conn.fetch(
                    self._sql["candidate_ranges"], stream.job_id, stream.dataset_key, end, 1_000_000
                )
            }
            for p in planned:
                if any((i.range_start, i.range_end, i.dataset_version) not in live for i in p.inputs):
                    continue
                await conn.execute(
                    self._sql["insert_compaction"],
                    p.task_id,
                    stream.org_id,
                    json.dumps(p.config),
                    max_attempts,
                    stream.dataset_uuid,
                    p.dataset_version,
                    p.config_hash,
                    p.range_start,
                    p.range_end,
                    stream.job_id,
                    stream.dataset_key,
                    [i.range_start for i in p.inputs],
                    [i.range_end for i in p.inputs],
                    [i.task_id for i in p.inputs],
                    [i.dataset_version for i in p.inputs],
                )
                created += 1
        return created

    async def due_retired(self, grace_seconds: float, limit: int) -> list[tuple[str, str]]:
        rows = await self._pool.fetch(self._sql["due_retired"], grace_seconds, limit)
        return [(r["dataset_uuid"], r["dataset_version"]) for r in rows]

    async def mark_collected(self, dataset_uuid: str, dataset_version: str) -> None:
        await self._pool.execute(self._sql["mark_collected"], dataset_uuid, dataset_version)
