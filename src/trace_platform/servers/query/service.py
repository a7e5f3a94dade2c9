"""Query Service logic: authorize, gate, attach, execute, audit.

Checks run in this order for both principals, each failing closed: credential, request
fields (relation names included: ``core.relations``), binding of the credential to the
request, a grant for every dataset (or a registry lookup of every name, org scoped, each
version pinned once for the whole query), SQL gate (exactly the caller's relation names
and the query's CTEs), storage location against the grant, then execution on a hardened
database with the audit rows (one per dataset) written beside it (``audit.py``). A query
whose audit rows cannot be written returns nothing; a query with one dataset refused runs
nothing.

A task's token is honoured only while its attempt is the task's current, running one.
The check is part of the query's audit row (``audit.py``): the statement that records the
access writes it only while the attempt is current, as a primary-key lookup of ``tasks``
in the same round trip, sent once the query process has the query. For a cancelled,
completed or superseded attempt nothing is recorded, the query process is killed as soon
as that answer arrives (whichever comes first, it or the query's end), and nothing of the
answer leaves: ``ATTEMPT_NOT_CURRENT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, QueryAuditRecord
from trace_platform.core.config import QuerySettings
from trace_platform.core.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    TraceError,
    Unauthenticated,
)
from trace_platform.core.relations import named_relations, requested
from trace_platform.core.tokens import CapabilityClaims, TokenVerifier
from trace_platform.core.validation import clamp_limit, require_attempt, require_dataset_name, require_uuid
from trace_platform.servers.api.identity import Principal, Role
from trace_platform.servers.query.attach import AttachedRelation, Attachment, DatasetAttacher, attachment, combine
from trace_platform.servers.query.audit import AuditTicket, QueryAudit
from trace_platform.servers.query.gate import GatedSql, GateMemo, SqlDenied
from trace_platform.servers.query.metrics import QueryMetrics
from trace_platform.servers.query.workers import LimitedResult, QueryWorkers

_DENIALS = (Unauthenticated, PermissionDenied, SqlDenied)

# Who calls a user RPC: the authenticator bound to the call's metadata, asked for a role.
Authenticate = Callable[[Role], Awaitable[Principal]]


@dataclass(frozen=True)
class RelationRead:
    """The version one relation read, fixed when the query started."""

    relation: str
    dataset_uuid: str
    dataset_version: str
    dataset: str = ""  # the registry name (user queries)


@dataclass(frozen=True)
class QueryResult:
    result: LimitedResult
    relations: tuple[RelationRead, ...]


# Either what was read (first, once), or an Arrow IPC chunk.
ArrowPart = tuple[RelationRead, ...] | bytes


class QueryService:
    def __init__(
        self,
        repo: DatasetRepository,
        attacher: DatasetAttacher,
        workers: QueryWorkers,
        task_verifier: TokenVerifier,
        settings: QuerySettings,
        metrics: QueryMetrics,
    ) -> None:
        self._repo = repo
        self._attacher = attacher
        self._workers = workers
        self._task_verifier = task_verifier
        self._settings = settings
        self.metrics = metrics
        self._gate = GateMemo()
        self.audit = QueryAudit(repo, metrics.audit_failures)

    async def task_query(
        self,
        token: str | None,
        task_id: str,
        attempt: int,
        datasets: Sequence[tuple[str, str]],
        sql: str,
        limit: int,
        deadline: float,
        shorthand: str = "",
    ) -> QueryResult:
        """``datasets``: (relation name, dataset UUID) pairs, each granted by the token; or
        ``shorthand``, one dataset UUID attached as ``dataset``."""
        with self._observe("task_query"):
            claims = await self._task_verifier.verify(token)
            task_id = require_uuid("task_id", task_id)
            attempt = require_attempt(attempt)
            pairs = requested(shorthand, datasets, "dataset_uuid")
            relations = named_relations([(name, require_uuid("dataset_uuid", ds)) for name, ds in pairs])
            claims.bind(task_id, attempt)
            gated, request = await self._attach_granted(claims, relations, sql)
            audits = [
                QueryAuditRecord(
                    org_id=claims.org_id,
                    dataset_uuid=r.version.dataset_uuid,
                    dataset_version=r.version.dataset_version,
                    sql_sha256=gated.sha256,
                    rpc="task_query",
                    task_id=task_id,
                    attempt=attempt,
                )
                for r in request.relations
            ]
            ticket = self.audit.ticket(audits, gated.refs)
            timeout = min(deadline, self._settings.task_timeout_seconds)
            result = await _audited(ticket, self._run_limited(request, sql, limit, timeout, ticket.open))
            self.metrics.rows.labels("task_query").inc(len(result.rows))
            return QueryResult(result, _reads(request))

    async def _attach_granted(
        self, claims: CapabilityClaims, relations: tuple[tuple[str, str], ...], sql: str
    ) -> tuple[GatedSql, Attachment]:
        grants = []
        for name, dataset_uuid in relations:  # every grant before anything is read
            grant = claims.grant_for(dataset_uuid)
            if grant is None:
                raise PermissionDenied("DATASET_NOT_GRANTED", "the task is not granted this dataset")
            grants.append((name, grant))
        gated = await self._gate.check(sql, frozenset(name for name, _ in relations))
        parts = [
            AttachedRelation(
                name,
                await self._attacher.attach(g.dataset_uuid, g.dataset_version, g.storage_ref, claims.s3_read_prefixes),
            )
            for name, g in grants
        ]
        return gated, attachment(parts)

    async def user_query(
        self,
        authenticate: Authenticate,
        datasets: Sequence[tuple[str, str]],
        sql: str,
        limit: int,
        deadline: float,
        shorthand: str = "",
    ) -> QueryResult:
        """``datasets``: (relation name, registry name) pairs, resolved in the caller's org;
        or ``shorthand``, one registry name attached as ``dataset``."""
        with self._observe("query"):
            user, request, gated = await self._authorize_user(authenticate, shorthand, datasets, sql)
            ticket = self.audit.ticket(_user_audits(user, request, gated.sha256, "query"), gated.refs)
            timeout = min(deadline, self._settings.user_timeout_seconds)
            result = await _audited(ticket, self._run_limited(request, sql, limit, timeout, ticket.open))
            self.metrics.rows.labels("query").inc(len(result.rows))
            return QueryResult(result, _reads(request))

    async def user_query_arrow(
        self,
        authenticate: Authenticate,
        datasets: Sequence[tuple[str, str]],
        sql: str,
        deadline: float,
        shorthand: str = "",
    ) -> AsyncGenerator[ArrowPart, None]:
        """What each relation reads, then Arrow IPC stream chunks. The audit rows are opened
        before the first chunk leaves and closed once the stream is complete."""
        with self._observe("query_arrow"):
            user, request, gated = await self._authorize_user(authenticate, shorthand, datasets, sql)
            timeout = min(deadline, self._settings.user_timeout_seconds)
            ticket = self.audit.ticket(_user_audits(user, request, gated.sha256, "query_arrow"), gated.refs)
            rows, opened = 0, False
            held = b""  # one message behind: the stream's end leaves once the outcome is recorded
            try:
                stream = self._workers.arrow(
                    request.objects,
                    request.pinned,
                    sql,
                    self._settings.arrow_batch_rows,
                    timeout,
                    ticket.open,
                    request.views,
                )
                async with contextlib.aclosing(stream) as chunks:
                    async for count, chunk in chunks:
                        if held:
                            if not opened:
                                await ticket.opened()
                                opened = True
                                yield _reads(request)
                            yield held
                        rows += count
                        held = chunk
                if not opened:
                    await ticket.opened()
                    yield _reads(request)
            except BaseException as exc:
                ticket.failed(exc)
                raise
            ticket.succeeded(rows)
            self.metrics.rows.labels("query_arrow").inc(rows)
            yield held

    async def _authorize_user(
        self, authenticate: Authenticate, shorthand: str, datasets: Sequence[tuple[str, str]], sql: str
    ) -> tuple[Principal, Attachment, GatedSql]:
        user = await authenticate(Role.VIEWER)
        pairs = requested(shorthand, datasets, "dataset")
        relations = named_relations([(rel, require_dataset_name(name)) for rel, name in pairs])
        gated = await self._gate.check(sql, frozenset(rel for rel, _ in relations))
        names = sorted({name for _, name in relations})
        # Every name resolved once, up front: a name given twice reads one version, and a
        # cut-over during the query changes nothing it reads.
        resolved = dict(
            zip(
                names, await asyncio.gather(*(self._repo.resolve_published(user.org_id, n) for n in names)), strict=True
            )
        )
        for name in names:
            found = resolved[name]
            if found is None:  # also for another org's dataset: existence is not revealed
                raise NotFound("DATASET_NOT_FOUND", f"no published dataset named {name}")
            if not found.versions:
                raise FailedPrecondition("DATASET_EMPTY", f"the dataset {name} has no data yet")
        parts = []
        for rel, name in relations:
            found = resolved[name]
            assert found is not None
            versions = [
                await self._attacher.attach(found.dataset_uuid, version, ref, None) for version, ref in found.versions
            ]
            parts.append(AttachedRelation(rel, combine(versions), name))
        return user, attachment(parts), gated

    async def _run_limited(
        self, request: Attachment, sql: str, limit: int, timeout: float, started: Callable[[], None]
    ) -> LimitedResult:
        rows = clamp_limit(limit, self._settings.default_limit, self._settings.max_limit)
        return await self._workers.rows(request.objects, request.pinned, sql, rows, timeout, started, request.views)

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


def _reads(request: Attachment) -> tuple[RelationRead, ...]:
    return tuple(
        RelationRead(r.name, r.version.dataset_uuid, r.version.dataset_version, r.dataset) for r in request.relations
    )


def _user_audits(user: Principal, request: Attachment, sql_digest: str, rpc: str) -> list[QueryAuditRecord]:
    """One row per relation (a dataset attached twice is recorded twice: both were asked for)."""
    return [
        QueryAuditRecord(
            org_id=user.org_id,
            dataset_uuid=r.version.dataset_uuid,
            dataset_version=r.version.dataset_version,
            sql_sha256=sql_digest,
            rpc=rpc,
            user_id=user.user_id,
        )
        for r in request.relations
    ]


async def _audited(ticket: AuditTicket, run: Awaitable[LimitedResult]) -> LimitedResult:
    """The query's result once its audit row is on record; the outcome is closed either way."""
    try:
        result = await ticket.answer(run)
    except BaseException as exc:
        ticket.failed(exc)
        raise
    ticket.succeeded(len(result.rows))
    return result
