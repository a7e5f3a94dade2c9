"""All SQL intents of the Dispatcher's task state, one method per transaction."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.dataset_repository import register_version
from trace_platform.core.errors import FailedPrecondition, PermissionDenied
from trace_platform.core.fencing import Fence, FenceState, check_fence
from trace_platform.core.models import (
    DatasetEvent,
    DatasetGrant,
    DatasetPublication,
    NewTask,
    TaskRef,
    TaskStatus,
)
from trace_platform.core.publication import DeclaredOutput


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    org_id: str
    operator: str
    config_json: str
    inputs_json: str
    datasets_json: str
    status: TaskStatus
    attempt: int
    max_attempts: int = 0
    lease_token: str | None = None
    lease_expires_at: datetime | None = None
    worker_id: str | None = None
    next_retry_at: datetime | None = None
    error_message: str | None = None
    declared_json: str = "[]"  # migration 0008: the outputs its trusted creator declared

    def grants(self) -> tuple[DatasetGrant, ...]:
        return tuple(DatasetGrant.from_claim(d) for d in json.loads(self.datasets_json))

    def declared_outputs(self) -> tuple[DeclaredOutput, ...]:
        return DeclaredOutput.parse_all(self.declared_json)


@dataclass(frozen=True)
class AttemptRow:
    attempt: int
    worker_id: str
    outcome: str
    error_message: str


@dataclass(frozen=True)
class Completion:
    status: TaskStatus
    duplicate: bool
    next_retry_at: datetime | None = None


@dataclass(frozen=True)
class ReapedLease:
    """An attempt the lease reaper failed; ``next_retry_at`` None: the task failed for good."""

    task_id: str
    attempt: int
    operator: str
    config_json: str
    next_retry_at: datetime | None


def _task_row(r: asyncpg.Record, status: str = "running") -> TaskRow:
    return TaskRow(
        task_id=str(r["id"]),
        org_id=str(r["org_id"]),
        operator=r["operator"],
        config_json=r["config"],
        inputs_json=r["inputs"],
        datasets_json=r["datasets"],
        status=TaskStatus(r.get("status", status)),
        attempt=r["attempt"],
        max_attempts=r.get("max_attempts", 0),
        lease_token=str(r["lease_token"]) if r.get("lease_token") else None,
        lease_expires_at=r.get("lease_expires_at"),
        worker_id=r.get("worker_id"),
        next_retry_at=r.get("next_retry_at"),
        error_message=r.get("error_message"),
        declared_json=r.get("declared_outputs") or "[]",
    )


PUBLICATION_RULE_SQLSTATE = "TRPUB"


@contextlib.contextmanager
def _operator_completion_rules() -> Iterator[None]:
    """Maps the completion rules of operators (migration 0004's trigger, e.g. cryo_ingest)."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        if getattr(exc, "sqlstate", None) == PUBLICATION_RULE_SQLSTATE:
            raise FailedPrecondition(
                "PUBLICATION_REQUIRED", "this operator must publish one dataset version per stream it extracts"
            ) from None
        raise


def _fence_arrays(refs: Sequence[TaskRef]) -> tuple[list[str], list[int], list[str]]:
    return [r.task_id for r in refs], [r.attempt for r in refs], [r.lease_token for r in refs]


class TaskRepository:
    def __init__(self, pool: asyncpg.Pool, wakeups_in_transaction: bool = False) -> None:
        """``wakeups_in_transaction``: the wake-up queue is the PostgreSQL queue on this
        pool's database, so ``insert_tasks`` writes the wake-up messages themselves in the
        tasks' transaction (no outbox row, no relay hop). Otherwise (SQS) an outbox row."""
        self._pool = pool
        self._sql = queries.load("tasks")
        self.wakeups_in_transaction = wakeups_in_transaction

    async def insert_tasks(self, tasks: Sequence[NewTask]) -> list[str]:
        """Creates the new ones among ``tasks`` (an existing id is left alone) with their
        wake-ups: in the queue itself or in the outbox, in the same statement either way."""
        ids = [t.task_id or str(uuid.uuid4()) for t in tasks]
        await self._pool.execute(
            self._sql["insert_tasks"],
            ids,
            [t.org_id for t in tasks],
            [t.operator for t in tasks],
            [json.dumps(t.config) for t in tasks],
            [json.dumps(t.inputs) for t in tasks],
            [json.dumps([g.to_claim() for g in t.datasets]) for t in tasks],
            [t.max_attempts for t in tasks],
            self.wakeups_in_transaction,
        )
        return ids

    async def get(self, task_id: str) -> TaskRow | None:
        row = await self._pool.fetchrow(self._sql["get_task"], task_id)
        return _task_row(row) if row else None

    async def attempts(self, task_id: str) -> list[AttemptRow]:
        rows = await self._pool.fetch(self._sql["get_attempts"], task_id)
        return [AttemptRow(r["attempt"], r["worker_id"], r["outcome"], r["error_message"]) for r in rows]

    async def claim(self, task_id: str, worker_id: str, lease_seconds: float) -> tuple[TaskRow, str] | None:
        lease_token = str(uuid.uuid4())
        row = await self._pool.fetchrow(self._sql["claim_task"], task_id, lease_token, lease_seconds, worker_id)
        return (_task_row(row), lease_token) if row else None

    async def claim_many(
        self, requests: Sequence[tuple[str, str]], lease_seconds: float
    ) -> list[tuple[TaskRow, str] | None]:
        """Batch claim of (task_id, worker_id) pairs in one statement; None where not claimed."""
        tokens = [str(uuid.uuid4()) for _ in requests]
        rows = await self._pool.fetch(
            self._sql["claim_tasks"], [t for t, _ in requests], tokens, lease_seconds, [w for _, w in requests]
        )
        by_token = {str(r["lease_token"]): r for r in rows}
        return [(_task_row(by_token[tok]), tok) if tok in by_token else None for tok in tokens]

    async def status_of(self, task_id: str) -> TaskStatus | None:
        row = await self._pool.fetchrow(self._sql["task_fence_state"], task_id)
        return TaskStatus(row["status"]) if row else None

    async def heartbeat(self, ref: TaskRef, lease_seconds: float) -> datetime:
        expires = await self._pool.fetchval(
            self._sql["heartbeat"], ref.task_id, ref.attempt, ref.lease_token, lease_seconds
        )
        if expires is not None:
            return expires  # type: ignore[no-any-return]
        async with self._pool.acquire() as conn, conn.transaction():
            fence = check_fence(await self._fence(conn, ref.task_id), ref)
        reason = "LEASE_EXPIRED" if fence is Fence.LATE else "TASK_NOT_RUNNING"
        raise FailedPrecondition(reason, "the attempt no longer holds a live lease")

    async def heartbeat_many(self, refs: Sequence[TaskRef], lease_seconds: float) -> list[datetime | None]:
        """Extends every live lease among ``refs`` in one statement; None: use ``heartbeat``."""
        rows = await self._pool.fetch(self._sql["heartbeat_many"], *_fence_arrays(refs), lease_seconds)
        expiry = {(str(r["id"]), r["attempt"], str(r["lease_token"])): r["lease_expires_at"] for r in rows}
        return [expiry.get((ref.task_id, ref.attempt, ref.lease_token)) for ref in refs]

    async def complete_live_many(self, refs: Sequence[TaskRef], outputs: Sequence[str]) -> list[bool]:
        """``complete_live`` for many attempts in one statement (outputs as JSON text); False
        where the single-call path must decide (fencing diagnosis, idempotent replay)."""
        try:
            rows = await self._pool.fetch(self._sql["complete_live_many"], *_fence_arrays(refs), list(outputs))
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != PUBLICATION_RULE_SQLSTATE:
                raise
            return [False] * len(refs)  # nothing was written; each item is judged alone
        done = {(str(r["task_id"]), r["attempt"], str(r["lease_token"])) for r in rows}
        result = []
        for ref in refs:
            key = (ref.task_id, ref.attempt, ref.lease_token)
            result.append(key in done)
            done.discard(key)  # a repeated item is a replay: the single-call path says duplicate
        return result

    async def _fence(self, conn: asyncpg.Connection, task_id: str) -> FenceState | None:
        row = await conn.fetchrow(self._sql["task_fence_state_for_update"], task_id)
        if row is None:
            return None
        return FenceState(
            status=TaskStatus(row["status"]),
            attempt=row["attempt"],
            lease_token=str(row["lease_token"]) if row["lease_token"] else None,
            attempt_outcome=row["attempt_outcome"],
        )

    async def complete(
        self,
        ref: TaskRef,
        status: TaskStatus,
        events: Sequence[DatasetEvent],
        outputs: Sequence[dict[str, Any]],
        publications: Sequence[DatasetPublication],
        error_message: str,
        retry_base: float,
        retry_cap: float,
        *,
        permanent: bool = False,
    ) -> Completion:
        """``permanent``: a failure no retry would change; none is scheduled."""
        with _operator_completion_rules():
            if status is TaskStatus.COMPLETED and not events and not publications:
                fast = await self._pool.fetchval(
                    self._sql["complete_live"], ref.task_id, ref.attempt, ref.lease_token, json.dumps(list(outputs))
                )
                if fast is not None:
                    return Completion(status=status, duplicate=False)
            async with self._pool.acquire() as conn, conn.transaction():
                state = await self._fence(conn, ref.task_id)
                fence = check_fence(state, ref)
                assert state is not None
                if fence is Fence.FINISHED:
                    if state.status is status:
                        return Completion(status=status, duplicate=True)
                    raise FailedPrecondition("ALREADY_FINISHED", "this attempt already finished differently")
                if events:
                    await self._insert_events(conn, ref, events)
                for pub in publications:
                    await register_version(conn, pub, ref.task_id)
                next_retry_at = None
                if status is TaskStatus.FAILED:
                    next_retry_at = await conn.fetchval(
                        self._sql["finish_failed"],
                        ref.task_id,
                        error_message or "failed",
                        retry_base,
                        retry_cap,
                        permanent,
                    )
                else:
                    await conn.execute(
                        self._sql["finish_completed"], ref.task_id, status.value, json.dumps(list(outputs))
                    )
                await conn.execute(
                    self._sql["finish_attempt"], ref.task_id, ref.attempt, status.value, error_message or None
                )
                return Completion(status=status, duplicate=False, next_retry_at=next_retry_at)

    async def emit_events(self, ref: TaskRef, events: Sequence[DatasetEvent]) -> int:
        async with self._pool.acquire() as conn, conn.transaction():
            if check_fence(await self._fence(conn, ref.task_id), ref) is Fence.FINISHED:
                raise FailedPrecondition("TASK_NOT_RUNNING", "the attempt already finished")
            return await self._insert_events(conn, ref, events)

    async def _insert_events(self, conn: asyncpg.Connection, ref: TaskRef, events: Sequence[DatasetEvent]) -> int:
        """Inside the caller's transaction. An event may not name a dataset of another
        org than the task's (``EVENT_NOT_ALLOWED``; the transaction writes nothing)."""
        uuids = [e.dataset_uuid for e in events]
        if await conn.fetchval(self._sql["foreign_event_datasets"], ref.task_id, uuids):
            raise PermissionDenied("EVENT_NOT_ALLOWED", "an event names a dataset of another org")
        rows = await conn.fetch(
            self._sql["insert_events"],
            ref.task_id,
            ref.attempt,
            [e.dataset_uuid for e in events],
            [e.dataset_version for e in events],
            [e.cursor for e in events],
            [e.partition_key for e in events],
            [e.start for e in events],
            [e.end for e in events],
        )
        return len(rows)

    async def buffer_publish(
        self, ref: TaskRef, org_id: str, batch_uri: str, content_type: str, size: int, scope: str
    ) -> tuple[str, bool]:
        """Returns (publish_id, duplicate)."""
        async with self._pool.acquire() as conn, conn.transaction():
            fence = check_fence(await self._fence(conn, ref.task_id), ref)
            existing = await conn.fetchval(self._sql["get_buffered_publish"], ref.task_id, ref.attempt, batch_uri)
            if existing is not None:
                return str(existing), True
            if fence is Fence.FINISHED:
                raise FailedPrecondition("TASK_NOT_RUNNING", "the attempt already finished")
            publish_id = await conn.fetchval(
                self._sql["insert_buffered_publish"],
                ref.task_id,
                ref.attempt,
                org_id,
                batch_uri,
                content_type,
                size,
                scope,
            )
            message = {
                "publish_id": str(publish_id),
                "task_id": ref.task_id,
                "attempt": ref.attempt,
                "org_id": org_id,
                "batch_uri": batch_uri,
                "content_type": content_type,
                "batch_size_bytes": size,
                "dedupe_scope": scope,
            }
            await conn.execute(self._sql["enqueue_buffer"], json.dumps(message))
            return str(publish_id), False

    async def reap_expired_leases(self, limit: int, retry_base: float, retry_cap: float) -> list[ReapedLease]:
        rows = await self._pool.fetch(self._sql["reap_expired_leases"], limit, retry_base, retry_cap)
        return [
            ReapedLease(str(r["task_id"]), r["attempt"], r["operator"], r["config"], r["next_retry_at"]) for r in rows
        ]

    async def requeue_due_retries(self, limit: int) -> int:
        rows = await self._pool.fetch(self._sql["requeue_due_retries"], limit)
        return len(rows)
