"""chain_sync state: jobs and streams (apply, pause, resume), the planner's per-stream
transaction, head observations and status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.core.chain_sync import (
    ChainSyncSpec,
    FixedTarget,
    FollowHead,
    derive_dataset_uuid,
    registry_name,
    spec_from_dict,
)
from trace_platform.core.errors import AlreadyExists, FailedPrecondition, NotFound
from trace_platform.core.planner import HeadObservation, Plan


@dataclass(frozen=True)
class StreamState:
    """What the planner needs about one stream, read under its row lock."""

    org_id: str
    job_name: str
    chain_id: int
    spec: ChainSyncSpec
    dataset_key: str
    dataset_uuid: str
    cursor: int
    in_flight: int
    head: HeadObservation | None
    # The streams planned together with this one (itself included): (dataset_key, dataset_uuid).
    group: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ScheduledRange:
    start: int
    end: int
    task_id: str
    config: dict[str, Any]


@dataclass(frozen=True)
class HeadTarget:
    org_id: str
    chain_id: int
    rpc_pool: str
    observed_at: float
    poll_seconds: float


@dataclass(frozen=True)
class VerifyDue:
    job_id: str
    org_id: str
    name: str
    last_blocks: int


@dataclass(frozen=True)
class VerificationRecord:
    """One scheduled check's outcome: the first differences (plain dicts), or its reason code."""

    from_block: int
    to_block: int
    difference_count: int = 0
    differences: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


FAILED_RANGES_SHOWN = 100  # per stream: enough to act on, bounded whatever the outage
PlanFn = Callable[[StreamState], tuple[Plan, list[ScheduledRange]]]


class ChainSyncRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("chain_sync")

    async def apply(self, org_id: str, spec: ChainSyncSpec) -> tuple[str, str]:
        """Create or update the job by (org, name). Returns (job_id, created|updated|unchanged).
        A uniqueness conflict (an apply racing this one, or a dataset identity held by another
        job) rolls the whole apply back and is the caller's ALREADY_EXISTS, never INTERNAL."""
        try:
            return await self._apply(org_id, spec)
        except asyncpg.UniqueViolationError as exc:
            raise _apply_conflict(exc.constraint_name or "") from None

    async def _apply(self, org_id: str, spec: ChainSyncSpec) -> tuple[str, str]:
        async with self._pool.acquire() as conn, conn.transaction():
            return await self.apply_in(conn, org_id, spec)

    async def apply_in(self, conn: asyncpg.Connection, org_id: str, spec: ChainSyncSpec) -> tuple[str, str]:
        """``apply`` inside the caller's transaction (a DAG activation applies its chain_sync
        jobs and moves its active pointer together). Unique violations propagate as is."""
        mode = spec.mode
        follow = mode if isinstance(mode, FollowHead) else None
        mode_args = (
            mode.kind,
            mode.from_block,
            mode.to_block if isinstance(mode, FixedTarget) else None,
            follow.tail_lag if follow else None,
            follow.head_poll_interval_seconds if follow else None,
            follow.max_head_age_seconds if follow else None,
        )
        canonical = json.dumps(spec.canonical(), sort_keys=True)
        row = await conn.fetchrow(self._sql["get_job_for_update"], org_id, spec.name)
        if row is None:
            job_id, outcome = str(uuid.uuid4()), "created"
            await conn.execute(
                self._sql["insert_job"],
                job_id,
                org_id,
                spec.name,
                spec.chain_id,
                *mode_args,
                canonical,
                spec.yaml_hash,
            )
        else:
            job_id = str(row["id"])
            if row["yaml_hash"] == spec.yaml_hash:
                return job_id, "unchanged"
            old = spec_from_dict(json.loads(row["spec"]))
            _check_compatible(old, spec)
            outcome = "updated"
            await conn.execute(self._sql["update_job"], job_id, *mode_args, canonical, spec.yaml_hash)
        for stream in spec.streams:
            # An existing stream keeps the UUID it was stored with (its published versions
            # hang off it); only a new stream gets one minted from its identity.
            dataset_uuid = str(
                await conn.fetchval(
                    self._sql["upsert_stream"],
                    job_id,
                    stream.dataset_key,
                    stream.cryo_dataset_name,
                    stream.rpc_pool,
                    derive_dataset_uuid(org_id, spec.chain_id, spec.name, stream.dataset_key),
                    stream.config_hash,
                    stream.chunk_size,
                    stream.max_inflight,
                    mode.from_block,
                )
            )
            registered = await conn.fetchrow(
                self._sql["register_partitioned_dataset"],
                dataset_uuid,
                org_id,
                registry_name(spec.name, stream.dataset_key),
                stream.config_hash,
            )
            if str(registered["id"]) != dataset_uuid or registered["kind"] != "partitioned":
                raise FailedPrecondition("DATASET_NAME_TAKEN", "a stream's dataset name is bound to another dataset")
        return job_id, outcome

    async def job_spec(self, org_id: str, name: str) -> ChainSyncSpec:
        """The job's stored spec (the canonical form apply wrote), org scoped."""
        raw = await self._pool.fetchval(self._sql["job_spec"], org_id, name)
        if raw is None:
            raise NotFound("CHAIN_SYNC_NOT_FOUND", "no chain_sync job of that name")
        return spec_from_dict(json.loads(raw))

    async def set_enabled(self, org_id: str, name: str, enabled: bool) -> int:
        """Pause or resume; resuming also retries ranges whose task failed for good.
        Returns how many ranges' tasks were requeued."""
        async with self._pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._sql["set_enabled"], org_id, name, enabled) is None:
                raise NotFound("CHAIN_SYNC_NOT_FOUND", "no chain_sync job of that name")
            if not enabled:
                return 0
            return int(await conn.fetchval(self._sql["retry_failed_ranges"], org_id, name))

    async def plannable_streams(self, limit: int) -> list[tuple[str, str]]:
        rows = await self._pool.fetch(self._sql["plannable_streams"], limit)
        return [(str(r["job_id"]), r["dataset_key"]) for r in rows]

    async def plan_stream(self, job_id: str, dataset_key: str, plan: PlanFn, max_attempts: int) -> int:
        """Lock the stream and the siblings it plans with, plan once, and record the ranges,
        one task per range for the group, the ledger rows, wake-ups and cursors together."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(self._sql["lock_group"], job_id, dataset_key)
            lead = next((r for r in rows if r["dataset_key"] == dataset_key), None)
            if lead is None or not lead["enabled"]:
                return 0  # planned by another Dispatcher right now, or paused
            head = None
            if lead["head_block"] is not None:
                head = HeadObservation(int(lead["head_block"]), float(lead["observed_at"]))
            state = StreamState(
                org_id=lead["org_id"],
                job_name=lead["name"],
                chain_id=int(lead["chain_id"]),
                spec=spec_from_dict(json.loads(lead["spec"])),
                dataset_key=dataset_key,
                dataset_uuid=lead["dataset_uuid"],
                cursor=int(lead["next_block"]),
                in_flight=max(int(r["in_flight"]) for r in rows),
                head=head,
                group=tuple((r["dataset_key"], r["dataset_uuid"]) for r in rows),
            )
            result, ranges = plan(state)
            if not ranges:
                return 0
            await conn.execute(
                self._sql["schedule_ranges"],
                job_id,
                [r.start for r in ranges],
                [r.end for r in ranges],
                [r.task_id for r in ranges],
                [json.dumps(r.config) for r in ranges],
                state.org_id,
                max_attempts,
                [key for key, _ in state.group],
                result.next_cursor,
            )
            return len(ranges)

    async def complete_finished_jobs(self) -> list[str]:
        return [r["name"] for r in await self._pool.fetch(self._sql["complete_finished_jobs"])]

    async def head_targets(self) -> list[HeadTarget]:
        rows = await self._pool.fetch(self._sql["head_targets"])
        return [
            HeadTarget(
                r["org_id"], int(r["chain_id"]), r["rpc_pool"], float(r["observed_at"]), float(r["poll_seconds"])
            )
            for r in rows
        ]

    async def record_head(self, target: HeadTarget, head_block: int) -> None:
        await self._pool.execute(self._sql["record_head"], target.org_id, target.chain_id, target.rpc_pool, head_block)

    async def status(
        self, org_id: str, name: str
    ) -> list[tuple[asyncpg.Record, list[asyncpg.Record], list[asyncpg.Record]]]:
        """Per job: its row, its streams' rows and its ranges that failed for good."""
        jobs = await self._pool.fetch(self._sql["job_status"], org_id, name)
        streams = await self._pool.fetch(self._sql["stream_status"], org_id, name)
        failed = await self._pool.fetch(self._sql["failed_ranges"], org_id, name, FAILED_RANGES_SHOWN)
        return [
            (
                job,
                [s for s in streams if s["job_id"] == job["job_id"]],
                [f for f in failed if f["job_id"] == job["job_id"]],
            )
            for job in jobs
        ]

    # --- scheduled integrity checks (the `verify:` section) --------------------------------

    async def verify_due(self, limit: int) -> list[VerifyDue]:
        rows = await self._pool.fetch(self._sql["verify_due"], limit)
        return [VerifyDue(r["job_id"], r["org_id"], r["name"], int(r["last_blocks"])) for r in rows]

    async def record_verification(self, job_id: str, result: VerificationRecord) -> None:
        await self._pool.execute(
            self._sql["record_verification"],
            job_id,
            result.from_block,
            result.to_block,
            result.difference_count,
            json.dumps(result.differences),
            result.error,
        )

    async def latest_verifications(self, org_id: str, name: str) -> dict[str, asyncpg.Record]:
        """job_id -> its latest scheduled check."""
        rows = await self._pool.fetch(self._sql["latest_verifications"], org_id, name)
        return {r["job_id"]: r for r in rows}


def _apply_conflict(constraint: str) -> AlreadyExists:
    """What a unique violation during apply means to the caller (no SQL, no constraint name)."""
    if constraint.startswith("chain_sync_jobs"):
        return AlreadyExists("CHAIN_SYNC_APPLY_CONFLICT", "another apply of this job ran at the same time; apply again")
    return AlreadyExists(
        "DATASET_ID_TAKEN", "a stream's dataset identity is held by another chain_sync job; nothing was applied"
    )


def _check_compatible(old: ChainSyncSpec, new: ChainSyncSpec) -> None:
    """What identifies the data cannot change under a name: chain, mode kind, start, stream datasets."""
    problems = []
    if old.chain_id != new.chain_id:
        problems.append("chain_id")
    if old.mode.kind != new.mode.kind or old.mode.from_block != new.mode.from_block:
        problems.append("mode.kind/mode.from_block")
    new_keys = {s.dataset_key: s for s in new.streams}
    for s in old.streams:
        if s.dataset_key not in new_keys:
            problems.append(f"streams.{s.dataset_key} (removed)")
        elif new_keys[s.dataset_key].cryo_dataset_name != s.cryo_dataset_name:
            problems.append(f"streams.{s.dataset_key}.cryo_dataset_name")
    if (
        isinstance(old.mode, FixedTarget)
        and isinstance(new.mode, FixedTarget)
        and new.mode.to_block < old.mode.to_block
    ):
        problems.append("mode.to_block (lowered)")
    if problems:
        raise FailedPrecondition(
            "CHAIN_SYNC_IMMUTABLE_FIELD", f"cannot change {', '.join(problems)}; apply under a new name"
        )
