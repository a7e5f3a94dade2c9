"""Reorg state of chain_sync jobs: recorded block hashes, reorgs, repairs, invalidations
(migration 0014). The cutover itself happens in the completion trigger of the last repair
task (so it is part of the normal, fenced completion transaction)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.core.models import StorageRef
from trace_platform.core.reorg import RecordedBlock

RECENT_REORGS_SHOWN = 10


@dataclass(frozen=True)
class WatchedJob:
    job_id: str
    org_id: str
    name: str
    spec_json: str
    blocks_key: str
    blocks_uuid: str
    rpc_pool: str


@dataclass(frozen=True)
class PublishedRange:
    range_start: int
    range_end: int
    dataset_version: str
    storage_ref: StorageRef


@dataclass(frozen=True)
class AffectedRange:
    dataset_key: str
    range_start: int
    range_end: int
    task_id: str
    dataset_version: str
    dataset_uuid: str
    rpc_pool: str


@dataclass(frozen=True)
class RepairTask:
    """One re-extraction: a task config (CryoTaskConfig.to_dict) and the ranges it replaces."""

    task_id: str
    config: dict[str, Any]
    range_start: int
    range_end: int
    replaces: tuple[tuple[AffectedRange, str], ...]  # (old range, new version)


class ReorgRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("reorgs")

    async def watched_jobs(self, limit: int) -> list[WatchedJob]:
        rows = await self._pool.fetch(self._sql["watched_jobs"], limit)
        return [
            WatchedJob(
                r["job_id"], r["org_id"], r["name"], r["spec"], r["dataset_key"], r["dataset_uuid"], r["rpc_pool"]
            )
            for r in rows
        ]

    async def unrecorded_ranges(self, job: WatchedJob, limit: int, floor: int) -> list[PublishedRange]:
        """Unrecorded completed blocks ranges that reach past block ``floor``."""
        rows = await self._pool.fetch(
            self._sql["unrecorded_ranges"], job.job_id, job.blocks_key, limit, job.blocks_uuid, floor
        )
        return [
            PublishedRange(
                int(r["range_start"]),
                int(r["range_end"]),
                r["dataset_version"],
                StorageRef.from_dict(json.loads(r["storage_ref"])),
            )
            for r in rows
        ]

    async def record_hashes(self, job_id: str, dataset_version: str, blocks: Sequence[RecordedBlock]) -> None:
        await self._pool.execute(
            self._sql["record_hashes"],
            job_id,
            [b.block_number for b in blocks],
            [b.block_hash for b in blocks],
            [b.parent_hash for b in blocks],
            dataset_version,
        )

    async def published_end(self, job: WatchedJob) -> int | None:
        end = await self._pool.fetchval(self._sql["published_end"], job.job_id, job.blocks_key)
        return None if end is None else int(end)

    async def prune_hashes(self, job_id: str, below: int) -> None:
        await self._pool.execute(self._sql["prune_hashes"], job_id, below)

    async def recorded_tip(self, job_id: str) -> int | None:
        tip = await self._pool.fetchval(self._sql["recorded_tip"], job_id)
        return None if tip is None else int(tip)

    async def recorded_between(self, job_id: str, lo: int, hi: int) -> dict[int, RecordedBlock]:
        rows = await self._pool.fetch(self._sql["recorded_between"], job_id, lo, hi)
        return {
            int(r["block_number"]): RecordedBlock(
                int(r["block_number"]),
                bytes(r["block_hash"]),
                None if r["parent_hash"] is None else bytes(r["parent_hash"]),
            )
            for r in rows
        }

    async def unsettled(self, job_id: str, tip: int) -> int:
        return int(await self._pool.fetchval(self._sql["unsettled_ranges"], job_id, tip))

    async def affected_ranges(self, job_id: str, fork: int) -> list[AffectedRange]:
        return [_affected(r) for r in await self._pool.fetch(self._sql["affected_ranges"], job_id, fork)]

    async def start_repair(
        self,
        job_id: str,
        org_id: str,
        fork: int,
        tip: int,
        max_attempts: int,
        build: Any,
    ) -> tuple[int, list[RepairTask]] | None:
        """Record the reorg and its repair tasks in one transaction. ``build(reorg_id,
        affected)`` returns the tasks (their versions depend on the reorg id). None when the
        job is paused or another repair of it started meanwhile (nothing written)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._sql["lock_job"], job_id) is None:
                return None
            rows = await conn.fetch(self._sql["affected_ranges"], job_id, fork)
            affected = [_affected(r) for r in rows]
            try:
                async with conn.transaction():  # a savepoint: the violation must not abort the outer one
                    reorg_id = int(
                        await conn.fetchval(
                            self._sql["insert_reorg"], job_id, fork, tip, tip - fork + 1, "repairing", len(affected)
                        )
                    )
            except asyncpg.UniqueViolationError:
                return None  # chain_sync_reorgs_one_open: another Dispatcher is repairing it
            tasks: list[RepairTask] = build(reorg_id, affected)
            pairs = [(t, old, new) for t in tasks for old, new in t.replaces]
            await conn.execute(
                self._sql["insert_repair_tasks"],
                org_id,
                [t.task_id for t in tasks],
                [json.dumps(t.config) for t in tasks],
                [t.range_start for t in tasks],
                [t.range_end for t in tasks],
                max_attempts,
                reorg_id,
                job_id,
                [old.dataset_key for _, old, _ in pairs],
                [old.range_start for _, old, _ in pairs],
                [old.range_end for _, old, _ in pairs],
                [t.task_id for t, _, _ in pairs],
                [old.task_id for _, old, _ in pairs],
                [old.dataset_version for _, old, _ in pairs],
                [new for _, _, new in pairs],
            )
            return reorg_id, tasks

    async def stop_too_deep(self, job_id: str, fork: int, tip: int) -> None:
        """Record the reorg as too deep and stop the job, together."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql["insert_reorg"], job_id, fork, tip, tip - fork + 1, "too_deep", 0)
            await conn.execute(self._sql["stop_too_deep"], job_id)

    async def retry_failed_repairs(self, org_id: str, name: str) -> int:
        """Requeue the open repair's tasks that failed for good (``trace resume``)."""
        return int(await self._pool.fetchval(self._sql["retry_failed_repairs"], org_id, name))

    async def summaries(self, org_id: str, name: str) -> dict[str, asyncpg.Record]:
        rows = await self._pool.fetch(self._sql["reorg_summary"], org_id, name)
        return {r["job_id"]: r for r in rows}

    async def recent(self, org_id: str, name: str) -> dict[str, list[asyncpg.Record]]:
        out: dict[str, list[asyncpg.Record]] = {}
        for r in await self._pool.fetch(self._sql["recent_reorgs"], org_id, name, RECENT_REORGS_SHOWN):
            out.setdefault(r["job_id"], []).append(r)
        return out

    async def invalidations(self, org_id: str, name: str, limit: int = 100) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(self._sql["invalidations"], org_id, name, limit))


def _affected(r: asyncpg.Record) -> AffectedRange:
    return AffectedRange(
        r["dataset_key"],
        int(r["range_start"]),
        int(r["range_end"]),
        r["task_id"],
        r["dataset_version"],
        r["dataset_uuid"],
        r["rpc_pool"],
    )
