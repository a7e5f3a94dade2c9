"""Each query's audit row: opened while the query runs, closed after the answer.

A query over several datasets has one row per dataset (the table keeps one dataset per
row), all written in one transaction, and every row gets the same outcome.

The row that records the access (org, principal, dataset version, SHA-256 of the SQL and,
in ``pii_access_audit``, the classified columns asked for) is written beside the query:
the write starts once DuckDB has the query (so the event loop's share of it does not hold
up the query's start) and the answer waits for it. No row of an answer leaves before its
access is on record, yet the answer pays no round trip of its own unless the query is
faster than the write. The outcome (``ok`` with row count and duration, or ``failed`` with
a reason code) follows after the answer, many queries per statement, retried for a while
if PostgreSQL refuses. A crash in between (or a close given up) leaves the row
``running``: the access is recorded, its statistics are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TypeVar

from prometheus_client import Counter

from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, QueryAuditClose, QueryAuditRecord
from trace_platform.core.errors import TraceError, Unauthenticated, Unavailable
from trace_platform.core.sql_columns import ColumnRefs

log = logging.getLogger(__name__)
T = TypeVar("T")
_BATCH = 500
# Closes wait this long before their statement: the answer that queued one leaves first,
# without the statement's client work beside it on the event loop, and the closes of
# queries that finish together share one statement.
_CLOSE_DELAY_SECONDS = 0.002


class QueryAudit:
    def __init__(
        self,
        repo: DatasetRepository,
        failures: Counter,
        max_pending: int = 10_000,
        retry_seconds: float = 1.0,
        max_attempts: int = 10,
    ) -> None:
        self._repo = repo
        self._failures = failures  # labels: stage ("open" or "close")
        self._max_pending = max_pending
        self._retry_seconds = retry_seconds
        self._max_attempts = max_attempts  # then a batch is given up: never one that blocks the rest
        self._opening: set[asyncio.Task[tuple[int, ...]]] = set()
        self._pending: list[QueryAuditClose] = []
        self._flushing: asyncio.Task[None] | None = None

    def ticket(self, records: Sequence[QueryAuditRecord], refs: ColumnRefs) -> AuditTicket:
        """The audit of one query (a row per dataset it reads); ``AuditTicket.open`` starts the write."""
        return AuditTicket(lambda: self._open(tuple(records), refs), self)

    def _open(self, records: tuple[QueryAuditRecord, ...], refs: ColumnRefs) -> asyncio.Task[tuple[int, ...]]:
        task = asyncio.create_task(self._write(records, refs))
        self._opening.add(task)
        task.add_done_callback(self._opened)
        return task

    async def _write(self, records: tuple[QueryAuditRecord, ...], refs: ColumnRefs) -> tuple[int, ...]:
        if len(records) == 1:  # one statement, no transaction of its own: the common case's latency
            audit_id = await self._repo.open_query_audit(records[0], refs)
            return () if audit_id is None else (audit_id,)
        return await self._repo.open_query_audits(records, refs)

    def _opened(self, task: asyncio.Task[tuple[int, ...]]) -> None:
        self._opening.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._failures.labels("open").inc()
            log.warning("query audit row not written", extra={"error": type(task.exception()).__name__})

    def add_close(self, close: QueryAuditClose) -> None:
        if len(self._pending) >= self._max_pending:
            self._pending.pop(0)  # bounded while PostgreSQL is away; that row stays 'running'
            self._failures.labels("close").inc()
        self._pending.append(close)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        failed_attempts = 0
        try:
            await asyncio.sleep(_CLOSE_DELAY_SECONDS)
            while self._pending:
                batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                try:
                    await self._repo.close_query_audits(batch)
                    failed_attempts = 0
                except Exception as exc:
                    self._failures.labels("close").inc()
                    failed_attempts += 1
                    if failed_attempts >= self._max_attempts:  # the rows stay 'running'
                        log.warning("query audit rows not closed", extra={"error": type(exc).__name__})
                        failed_attempts = 0
                        continue
                    self._pending[:0] = batch
                    await asyncio.sleep(self._retry_seconds)
        finally:
            self._flushing = None

    async def drain(self, timeout: float) -> None:
        """On shutdown: rows being opened, then every pending close, for at most ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        if self._opening:
            await asyncio.wait(set(self._opening), timeout=timeout)
        flushing = self._flushing
        if flushing is not None:
            remaining = max(deadline - asyncio.get_running_loop().time(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(flushing), remaining)
        if self._pending:
            log.warning("query audit rows left running at shutdown", extra={"rows": len(self._pending)})
            if self._flushing is not None:
                self._flushing.cancel()


class AuditTicket:
    """One query's audit row: ``open`` when the query starts, ``opened`` before answering,
    and one close (the first wins). A query that never started leaves no row: it read nothing.
    A task's row is written only while its attempt is current (the same statement checks),
    so the row doubles as the attempt's liveness check, at no round trip of its own."""

    def __init__(self, start: Callable[[], asyncio.Task[tuple[int, ...]]], audit: QueryAudit) -> None:
        self._start = start
        self._opening: asyncio.Task[tuple[int, ...]] | None = None
        self._settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._audit = audit
        self._started = time.perf_counter()
        self._outcome: QueryAuditClose | None = None  # audit_id filled in once opened

    def open(self) -> None:
        """Starts writing the row (once; later calls do nothing). A close that came first
        (the call was cancelled while the query thread was starting) follows it."""
        if self._opening is None:
            self._opening = self._start()
            self._opening.add_done_callback(self._settle)
            if self._outcome is not None:
                self._send_close()

    def _settle(self, _: asyncio.Task[tuple[int, ...]]) -> None:
        if not self._settled.done():
            self._settled.set_result(None)

    async def opened(self) -> None:
        """Returns once the row is committed. If it cannot be, nothing may be returned:
        UNAVAILABLE (the caller may retry). If the query's task attempt is no longer the
        task's current, running one, nothing was written and nothing may be returned:
        UNAUTHENTICATED ``ATTEMPT_NOT_CURRENT``."""
        self.open()
        assert self._opening is not None
        try:
            ids = await asyncio.shield(self._opening)
        except asyncio.CancelledError:
            raise
        except Exception:
            raise Unavailable("AUDIT_UNAVAILABLE", "the query could not be audited; nothing was returned") from None
        if not ids:
            raise Unauthenticated("ATTEMPT_NOT_CURRENT", "the token's attempt is no longer running")

    async def answer(self, run: Awaitable[T]) -> T:
        """``run``'s result once the row is on record. A row refused while ``run`` is still
        going (the attempt ended, or PostgreSQL is away) ends it at once: the query process
        is killed and nothing is returned."""
        task = asyncio.ensure_future(run)
        try:
            await asyncio.wait((task, self._settled), return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await self.opened()  # settled first: raises if refused
            result = await task
            await self.opened()
            return result
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))

    def succeeded(self, row_count: int) -> None:
        self._close("ok", row_count, None)

    def failed(self, exc: BaseException) -> None:
        if isinstance(exc, TraceError):
            reason = exc.reason
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            reason = "CANCELLED"
        else:
            reason = "INTERNAL"
        self._close("failed", None, reason)

    def _close(self, outcome: str, row_count: int | None, reason: str | None) -> None:
        if self._outcome is not None:
            return
        duration_ms = (time.perf_counter() - self._started) * 1000
        self._outcome = QueryAuditClose(0, outcome, duration_ms, row_count, reason)
        if self._opening is not None:
            self._send_close()

    def _send_close(self) -> None:
        assert self._opening is not None and self._outcome is not None
        outcome = self._outcome

        def add(task: asyncio.Task[tuple[int, ...]]) -> None:
            if not task.cancelled() and task.exception() is None:
                for audit_id in task.result():
                    self._audit.add_close(replace(outcome, audit_id=audit_id))

        if self._opening.done():  # now, so a drain that follows sees it
            add(self._opening)
        else:
            self._opening.add_done_callback(add)
