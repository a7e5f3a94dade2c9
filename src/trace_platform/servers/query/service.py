"""Query Service logic: authorize, gate, attach, execute, audit.

Checks run in this order for both principals, each failing closed: credential, request
fields, binding of the credential to the request, dataset grant (or registry lookup,
org scoped), SQL gate, storage location against the grant, then execution on a hardened
database with the audit row written beside it (``audit.py``). A query whose audit row
cannot be written returns nothing.

A task's token is honoured only while its attempt is the task's current, running one
(``AttemptRepository.is_current``: one primary-key lookup in PostgreSQL, run beside the
gate and attach so it adds no latency of its own). The query never starts for a
cancelled, completed or superseded attempt: ``ATTEMPT_NOT_CURRENT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from trace_platform.adapters.postgres.attempt_repository import AttemptRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, QueryAuditRecord
from trace_platform.core.config import QuerySettings
from trace_platform.core.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    TraceError,
    Unauthenticated,
)
from trace_platform.core.tokens import TokenVerifier
from trace_platform.core.user_tokens import UserTokenVerifier
from trace_platform.core.validation import clamp_limit, require_attempt, require_dataset_name, require_uuid
from trace_platform.servers.query.attach import AttachedVersion, DatasetAttacher, combine
from trace_platform.servers.query.audit import AuditTicket, QueryAudit
from trace_platform.servers.query.gate import GatedSql, GateMemo, SqlDenied
from trace_platform.servers.query.metrics import QueryMetrics
from trace_platform.servers.query.workers import LimitedResult, QueryWorkers

_DENIALS = (Unauthenticated, PermissionDenied, SqlDenied)


@dataclass(frozen=True)
class UserQueryResult:
    result: LimitedResult
    dataset_version: str


class QueryService:
    def __init__(
        self,
        repo: DatasetRepository,
        attacher: DatasetAttacher,
        workers: QueryWorkers,
        task_verifier: TokenVerifier,
        user_verifier: UserTokenVerifier,
        settings: QuerySettings,
        metrics: QueryMetrics,
        attempts: AttemptRepository,
    ) -> None:
        self._repo = repo
        self._attempts = attempts
        self._attacher = attacher
        self._workers = workers
        self._task_verifier = task_verifier
        self._user_verifier = user_verifier
        self._settings = settings
        self.metrics = metrics
        self._gate = GateMemo()
        self.audit = QueryAudit(repo, metrics.audit_failures)

    async def task_query(
        self, token: str | None, task_id: str, attempt: int, dataset_uuid: str, sql: str, limit: int, deadline: float
    ) -> LimitedResult:
        with self._observe("task_query"):
            claims = await self._task_verifier.verify(token)
            task_id = require_uuid("task_id", task_id)
            attempt = require_attempt(attempt)
            dataset_uuid = require_uuid("dataset_uuid", dataset_uuid)
            claims.bind(task_id, attempt)
            alive = asyncio.ensure_future(self._attempts.is_current(task_id, attempt))
            try:
                grant = claims.grant_for(dataset_uuid)
                if grant is None:
                    raise PermissionDenied("DATASET_NOT_GRANTED", "the task is not granted this dataset")
                gated = await self._gate.check(sql)
                attached = await self._attacher.attach(
                    grant.dataset_uuid, grant.dataset_version, grant.storage_ref, claims.s3_read_prefixes
                )
            except BaseException:
                alive.cancel()
                raise
            if not await alive:
                raise Unauthenticated("ATTEMPT_NOT_CURRENT", "the token's attempt is no longer running")
            audit = QueryAuditRecord(
                org_id=claims.org_id,
                dataset_uuid=attached.dataset_uuid,
                dataset_version=attached.dataset_version,
                sql_sha256=gated.sha256,
                rpc="task_query",
                task_id=task_id,
                attempt=attempt,
            )
            ticket = self.audit.ticket(audit, gated.refs)
            timeout = min(deadline, self._settings.task_timeout_seconds)
            result = await _audited(ticket, self._run_limited(attached, sql, limit, timeout, ticket.open))
            self.metrics.rows.labels("task_query").inc(len(result.rows))
            return result

    async def user_query(
        self, bearer: str | None, dataset: str, sql: str, limit: int, deadline: float
    ) -> UserQueryResult:
        with self._observe("query"):
            user, attached, gated = await self._authorize_user(bearer, dataset, sql)
            ticket = self.audit.ticket(_user_audit(user, attached, gated.sha256, "query"), gated.refs)
            timeout = min(deadline, self._settings.user_timeout_seconds)
            result = await _audited(ticket, self._run_limited(attached, sql, limit, timeout, ticket.open))
            self.metrics.rows.labels("query").inc(len(result.rows))
            return UserQueryResult(result, attached.dataset_version)

    async def user_query_arrow(
        self, bearer: str | None, dataset: str, sql: str, deadline: float
    ) -> AsyncGenerator[bytes, None]:
        """Arrow IPC stream chunks. The audit row is opened before the first chunk leaves
        and closed once the stream is complete."""
        with self._observe("query_arrow"):
            user, attached, gated = await self._authorize_user(bearer, dataset, sql)
            timeout = min(deadline, self._settings.user_timeout_seconds)
            ticket = self.audit.ticket(_user_audit(user, attached, gated.sha256, "query_arrow"), gated.refs)
            rows, opened = 0, False
            held = b""  # one message behind: the stream's end leaves once the outcome is recorded
            try:
                stream = self._workers.arrow(
                    attached.objects, attached.pinned, sql, self._settings.arrow_batch_rows, timeout, ticket.open
                )
                async with contextlib.aclosing(stream) as chunks:
                    async for count, chunk in chunks:
                        if held:
                            if not opened:
                                await ticket.opened()
                                opened = True
                            yield held
                        rows += count
                        held = chunk
                if not opened:
                    await ticket.opened()
            except BaseException as exc:
                ticket.failed(exc)
                raise
            ticket.succeeded(rows)
            self.metrics.rows.labels("query_arrow").inc(rows)
            yield held

    async def _authorize_user(
        self, bearer: str | None, dataset: str, sql: str
    ) -> tuple[_User, AttachedVersion, GatedSql]:
        claims = self._user_verifier.verify(bearer)
        name = require_dataset_name(dataset)
        gated = await self._gate.check(sql)
        resolved = await self._repo.resolve_published(claims.org_id, name)
        if resolved is None:  # also for another org's dataset: existence is not revealed
            raise NotFound("DATASET_NOT_FOUND", "no published dataset of that name")
        if not resolved.versions:
            raise FailedPrecondition("DATASET_EMPTY", "the dataset has no data yet")
        parts = [
            await self._attacher.attach(resolved.dataset_uuid, version, ref, None) for version, ref in resolved.versions
        ]
        attached = combine(parts)
        return _User(claims.org_id, claims.subject), attached, gated

    async def _run_limited(
        self, attached: AttachedVersion, sql: str, limit: int, timeout: float, started: Callable[[], None]
    ) -> LimitedResult:
        rows = clamp_limit(limit, self._settings.default_limit, self._settings.max_limit)
        return await self._workers.rows(attached.objects, attached.pinned, sql, rows, timeout, started)

    @contextlib.contextmanager
    def _observe(self, rpc: str) -> Iterator[None]:
        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            yield
        except TraceError as exc:
            counter = self.metrics.denials if isinstance(exc, _DENIALS) else self.metrics.errors
            counter.labels(rpc, exc.reason).inc()
            raise
        except Exception:
            self.metrics.errors.labels(rpc, "INTERNAL").inc()
            raise
        else:
            self.metrics.queries.labels(rpc).inc()
            self.metrics.duration.labels(rpc).observe(time.perf_counter() - started)
        finally:
            self.metrics.in_flight.dec()


@dataclass(frozen=True)
class _User:
    org_id: str
    subject: str


def _user_audit(user: _User, attached: AttachedVersion, sql_digest: str, rpc: str) -> QueryAuditRecord:
    return QueryAuditRecord(
        org_id=user.org_id,
        dataset_uuid=attached.dataset_uuid,
        dataset_version=attached.dataset_version,
        sql_sha256=sql_digest,
        rpc=rpc,
        user_id=user.subject,
    )


async def _audited(ticket: AuditTicket, run: Awaitable[LimitedResult]) -> LimitedResult:
    """The query's result once its audit row is on record; the outcome is closed either way."""
    try:
        result = await run
        await ticket.opened()
    except BaseException as exc:
        ticket.failed(exc)
        raise
    ticket.succeeded(len(result.rows))
    return result
