"""Dispatcher domain logic (no protobuf, no driver types)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry

from trace_platform.adapters.postgres.task_repository import (
    AttemptRow,
    Completion,
    TaskRepository,
    TaskRow,
)
from trace_platform.core import publication
from trace_platform.core.config import DispatcherSettings
from trace_platform.core.errors import InvalidArgument, PermissionDenied
from trace_platform.core.keys import KeyRing
from trace_platform.core.models import (
    DatasetEvent,
    DatasetPublication,
    NewTask,
    TaskRef,
    TaskStatus,
)
from trace_platform.core.publication import output_prefixes
from trace_platform.core.storage_paths import attempt_prefix, is_under
from trace_platform.core.tokens import CapabilityClaims, TokenIssuer
from trace_platform.servers.common import failure_log
from trace_platform.servers.dispatcher.metrics import DispatcherMetrics

BUFFER_CONTENT_TYPES = ("application/jsonl", "application/x-ndjson")
MAX_BATCH_BYTES = 1 << 30
# Longest batch_uri accepted: the (task, attempt, batch_uri) unique index cannot hold a
# key of more than ~2.7 kB, and a longer one made PostgreSQL fail (INTERNAL).
MAX_BATCH_URI_CHARS = 2048


@dataclass(frozen=True)
class ClaimedTask:
    task: TaskRow
    lease_token: str
    lease_expires_at: datetime
    capability_token: str


@dataclass(frozen=True)
class TaskView:
    task: TaskRow
    attempts: list[AttemptRow]

    @property
    def terminal(self) -> bool:
        t = self.task
        if t.status in (TaskStatus.COMPLETED, TaskStatus.CANCELED):
            return True
        return t.status is TaskStatus.FAILED and t.next_retry_at is None


class DispatcherService:
    def __init__(
        self,
        repo: TaskRepository,
        issuer: TokenIssuer,
        settings: DispatcherSettings,
        scratch_uri: str,
        key_ring: KeyRing | None = None,
        on_outbox_write: Callable[[], None] = lambda: None,
        on_token_issued: Callable[[str, CapabilityClaims], None] = lambda token, claims: None,
        datasets_uri: str = "",
        metrics: DispatcherMetrics | None = None,
        on_datasets_published: Callable[[], None] = lambda: None,
    ) -> None:
        self.metrics = metrics or DispatcherMetrics(CollectorRegistry())
        self._on_token_issued = on_token_issued
        # Where declared outputs are written (empty: no task may publish, fail closed).
        self._datasets_uri = datasets_uri.rstrip("/")
        self._repo = repo
        self._issuer = issuer
        self.settings = settings
        self._scratch_uri = scratch_uri.rstrip("/")
        self._ring = key_ring
        self._on_outbox_write = on_outbox_write
        # A completion that published datasets frees planning room (chain_sync), so the
        # planner is woken (through NOTIFY, wherever it runs) instead of waiting for its tick.
        self._on_datasets_published = on_datasets_published

    async def create_tasks(self, tasks: Sequence[NewTask]) -> list[str]:
        if not tasks:
            raise InvalidArgument("MISSING_FIELD", "at least one task is required", field="tasks")
        if len(tasks) > self.settings.max_tasks_per_create:
            raise InvalidArgument("TOO_MANY_TASKS", "too many tasks in one request", field="tasks")
        ids = await self._repo.insert_tasks(tasks)
        if not self._repo.wakeups_in_transaction:
            self._on_outbox_write()
        return ids

    async def get_task(self, task_id: str) -> TaskView | None:
        task = await self._repo.get(task_id)
        if task is None:
            return None
        return TaskView(task, await self._repo.attempts(task_id))

    async def claim(self, task_id: str, worker_id: str) -> ClaimedTask | TaskStatus | None:
        """A claimed task, or the status that prevented the claim (None: no such task)."""
        claimed = await self._repo.claim(task_id, worker_id, self.settings.lease_seconds)
        result = await self._repo.status_of(task_id) if claimed is None else self._issue(*claimed)
        self._count_claims([result])
        return result

    async def claim_many(self, requests: Sequence[tuple[str, str]]) -> list[ClaimedTask | TaskStatus | None]:
        """``claim`` for many (task_id, worker_id) pairs, in request order."""
        if not requests:
            return []
        claimed = await self._repo.claim_many(requests, self.settings.lease_seconds)
        results: list[ClaimedTask | TaskStatus | None] = []
        for (task_id, _), c in zip(requests, claimed, strict=True):
            results.append(self._issue(*c) if c is not None else await self._repo.status_of(task_id))
        self._count_claims(results)
        return results

    def _count_claims(self, results: Sequence[ClaimedTask | TaskStatus | None]) -> None:
        """By operator when claimed; a refusal by the status that prevented it (operator unread)."""
        for r in results:
            if isinstance(r, ClaimedTask):
                self.metrics.claims.labels(r.task.operator, "claimed").inc()
            else:
                self.metrics.claims.labels("", r.value if r is not None else "not_found").inc()

    def _issue(self, task: TaskRow, lease_token: str) -> ClaimedTask:
        """One capability token per claimed attempt."""
        assert task.lease_expires_at is not None
        token, issued = self._issuer.issue_claims(self.claims_for(task))
        self._on_token_issued(token, issued)
        return ClaimedTask(task, lease_token, task.lease_expires_at, token)

    def claims_for(self, task: TaskRow) -> CapabilityClaims:
        grants = task.grants()
        # Read grants cover exactly the granted dataset versions' prefixes.
        reads = tuple(g.storage_ref.uri() for g in grants if g.storage_ref is not None)
        return CapabilityClaims(
            org_id=task.org_id,
            task_id=task.task_id,
            attempt=task.attempt,
            datasets=grants,
            s3_read_prefixes=reads,
            # The attempt's scratch prefix, and the version prefix of each declared output.
            s3_write_prefixes=(
                self.write_prefix(task.task_id, task.attempt),
                *output_prefixes(self._datasets_uri, task.declared_outputs()),
            ),
        )

    def write_prefix(self, task_id: str, attempt: int) -> str:
        return attempt_prefix(self._scratch_uri, task_id, attempt)

    async def heartbeat(self, ref: TaskRef) -> datetime:
        return await self._repo.heartbeat(ref, self.settings.lease_seconds)

    def renewal(self, claims: CapabilityClaims) -> tuple[str, float] | None:
        """A fresh token (and its expiry) for the attempt of ``claims``, once less than half
        of its TTL is left; None: keep the current one. Call only after a heartbeat extended
        the attempt's lease (so the attempt is live and the caller holds its lease): the
        new token carries exactly the verified claims, with a new ``iat``/``exp``."""
        if not self._issuer.needs_renewal(claims):
            return None
        token, issued = self._issuer.issue_claims(replace(claims, expires_at=0.0, not_before=0.0))
        self._on_token_issued(token, issued)
        return token, issued.expires_at

    async def heartbeat_many(self, refs: Sequence[TaskRef]) -> list[datetime | None]:
        """The new lease expiry of every live attempt in ``refs``; None: ask ``heartbeat``."""
        return await self._repo.heartbeat_many(refs, self.settings.lease_seconds) if refs else []

    async def complete_live_many(
        self, refs: Sequence[TaskRef], outputs: Sequence[Sequence[dict[str, Any]]]
    ) -> list[bool]:
        """Completes (status completed, no events or publications) every live attempt in
        ``refs``; False where ``complete`` must decide (fencing, idempotent replay)."""
        if not refs:
            return []
        done = await self._repo.complete_live_many(refs, [json.dumps(list(o)) for o in outputs])
        self.metrics.completions.labels(TaskStatus.COMPLETED.value).inc(sum(done))
        return done

    async def complete(
        self,
        claims: CapabilityClaims,
        ref: TaskRef,
        status: TaskStatus,
        events: Sequence[DatasetEvent],
        outputs: Sequence[dict[str, Any]],
        publications: Sequence[DatasetPublication],
        error_message: str,
        *,
        permanent: bool = False,
    ) -> Completion:
        if status not in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELED):
            raise InvalidArgument("INVALID_STATUS", "status must be completed, failed or canceled", field="status")
        if publications:
            await self._authorize_publications(claims, ref, status, publications)
        s = self.settings
        result = await self._repo.complete(
            ref,
            status,
            events,
            outputs,
            publications,
            error_message[:4096],
            s.retry_base_seconds,
            s.retry_max_seconds,
            permanent=permanent,
        )
        if events or (publications and status is TaskStatus.COMPLETED):
            self._on_outbox_write()  # events and publications (migration 0011) write route_event rows
        if status is TaskStatus.FAILED and not result.duplicate:
            task = await self._repo.get(ref.task_id)  # only on failure: the operator and range to name
            failure_log.task_attempt_failed(
                ref.task_id,
                ref.attempt,
                task.operator if task else "",
                error_message,
                result.next_retry_at,
                task.config_json if task else None,
            )
        if not result.duplicate:
            self.metrics.completions.labels(result.status.value).inc()
        if publications and not result.duplicate:
            self._on_datasets_published()
        return result

    async def _authorize_publications(
        self, claims: CapabilityClaims, ref: TaskRef, status: TaskStatus, publications: Sequence[DatasetPublication]
    ) -> None:
        """Only a success publishes, and only what the task was created for (core.publication).
        Declared outputs never change after creation, so reading them before the fenced
        completion transaction is not a race; a refusal happens before anything is written,
        so the attempt stays running and a correct completion can follow."""
        if status is not TaskStatus.COMPLETED:
            raise PermissionDenied(publication.NOT_ALLOWED, "only a completed task publishes dataset versions")
        task = await self._repo.get(ref.task_id)
        if task is None:
            raise PermissionDenied(publication.NOT_ALLOWED, "no such task")
        publication.check_publications(
            publications, task.declared_outputs(), task.org_id, claims, self._datasets_uri
        )

    async def emit_events(self, ref: TaskRef, events: Sequence[DatasetEvent]) -> int:
        if not events:
            raise InvalidArgument("MISSING_FIELD", "at least one event is required", field="events")
        accepted = await self._repo.emit_events(ref, events)
        self._on_outbox_write()
        return accepted

    async def buffer_publish(
        self, claims: CapabilityClaims, ref: TaskRef, batch_uri: str, content_type: str, size: int, scope: str
    ) -> tuple[str, bool]:
        if content_type not in BUFFER_CONTENT_TYPES:
            raise InvalidArgument("INVALID_CONTENT_TYPE", "batch must be JSON lines", field="content_type")
        if not 0 <= size <= MAX_BATCH_BYTES:
            raise InvalidArgument("INVALID_BATCH_SIZE", "batch_size_bytes out of range", field="batch_size_bytes")
        if (
            not batch_uri
            or len(batch_uri) > MAX_BATCH_URI_CHARS
            or ".." in batch_uri
            or not batch_uri.startswith(("s3://", "file://"))
        ):
            raise InvalidArgument("INVALID_BATCH_URI", "batch_uri must be an s3:// or file:// URI", field="batch_uri")
        # A batch is an artifact of this attempt: under its scratch prefix (normalized, so no
        # path trick), never under a dataset version prefix the token also carries.
        scratch = self.write_prefix(ref.task_id, ref.attempt)
        if not (is_under(batch_uri, scratch) and any(is_under(batch_uri, p) for p in claims.s3_write_prefixes)):
            raise PermissionDenied("BATCH_URI_NOT_GRANTED", "batch_uri is outside the task's write prefix")
        result = await self._repo.buffer_publish(ref, claims.org_id, batch_uri, content_type, size, scope)
        if not result[1]:
            self._on_outbox_write()
        return result

    def jwks(self) -> dict[str, Any]:
        if self._ring is None:
            return {"keys": []}
        return self._ring.jwks(time.time())
