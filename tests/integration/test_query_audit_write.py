"""The audit rows of the Query Service against real PostgreSQL: opened ('running', with the
PII access row) in one statement, closed in batches, retried while PostgreSQL refuses."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Counter

from tests.conftest import eventually
from tests.integration.conftest import refuse_audit_writes
from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, QueryAuditClose, QueryAuditRecord
from trace_platform.core.errors import Unavailable
from trace_platform.core.sql_columns import ColumnRefs
from trace_platform.servers.query.audit import QueryAudit

ORG = "00000000-0000-0000-0000-0000000000a1"
NO_COLUMNS = ColumnRefs(False, frozenset())


def _record() -> QueryAuditRecord:
    return QueryAuditRecord(
        org_id=ORG,
        dataset_uuid=str(uuid.uuid4()),
        dataset_version=str(uuid.uuid4()),
        sql_sha256=hashlib.sha256(b"SELECT 1").hexdigest(),
        rpc="query",
        user_id="alice",
    )


def _open_args(r: QueryAuditRecord) -> tuple[object, ...]:
    return (r.org_id, None, None, r.user_id, r.dataset_uuid, r.dataset_version, r.sql_sha256, r.rpc, False, [])


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


def _failures() -> Counter:
    return Counter("audit_failures", "test", ["stage"], registry=CollectorRegistry())


async def test_open_writes_a_running_row_and_close_records_the_outcome_once(pool: asyncpg.Pool) -> None:
    repo = DatasetRepository(pool)
    record = _record()
    ok_id = await repo.open_query_audit(record, NO_COLUMNS)
    failed_id = await repo.open_query_audit(record, NO_COLUMNS)
    sql = "SELECT outcome, row_count, duration_ms, sql_sha256 FROM query_audit WHERE id = $1"
    row = await pool.fetchrow(sql, ok_id)
    assert row is not None and tuple(row) == ("running", None, None, record.sql_sha256)
    closes = [QueryAuditClose(ok_id, "ok", 2.5, 3), QueryAuditClose(failed_id, "failed", 1.0, None, "QUERY_TIMEOUT")]
    await repo.close_query_audits(closes)
    # A close only changes a running row, so a retried close cannot rewrite an outcome.
    await repo.close_query_audits([QueryAuditClose(ok_id, "failed", 9.0, None, "INTERNAL")])
    rows = await pool.fetch(
        "SELECT outcome, row_count, duration_ms, failure_reason FROM query_audit WHERE id = ANY($1) ORDER BY id",
        [ok_id, failed_id],
    )
    assert [tuple(r) for r in rows] == [("ok", 3, 2.5, None), ("failed", None, 1.0, "QUERY_TIMEOUT")]
    # The pool's connections keep durable commits.
    assert await pool.fetchval("SHOW synchronous_commit") == "on"


async def test_an_ok_row_needs_its_counts_and_a_failed_row_its_reason(pool: asyncpg.Pool) -> None:
    repo = DatasetRepository(pool)
    audit_id = await repo.open_query_audit(_record(), NO_COLUMNS)
    for bad in (QueryAuditClose(audit_id, "ok", 1.0), QueryAuditClose(audit_id, "failed", 1.0)):
        with pytest.raises(asyncpg.CheckViolationError):
            await repo.close_query_audits([bad])
    assert await pool.fetchval("SELECT outcome FROM query_audit WHERE id = $1", audit_id) == "running"


async def test_the_close_statement_turns_off_the_flush_wait_for_its_own_transaction(db: asyncpg.Connection) -> None:
    audit_id = await db.fetchval(queries.load("datasets")["open_query_audit"], *_open_args(_record()))
    tx = db.transaction()
    await tx.start()
    await db.execute(queries.load("datasets")["close_query_audits"], [audit_id], ["ok"], [1], [1.0], [None])
    assert await db.fetchval("SHOW synchronous_commit") == "off"
    await tx.rollback()
    assert await db.fetchval("SHOW synchronous_commit") == "on"


async def test_a_ticket_that_cannot_open_refuses_the_answer(pool: asyncpg.Pool, db: asyncpg.Connection) -> None:
    failures = _failures()
    audit = QueryAudit(DatasetRepository(pool), failures)
    await refuse_audit_writes(db, "INSERT")
    ticket = audit.ticket([_record()], NO_COLUMNS)
    with pytest.raises(Unavailable) as exc:
        await ticket.opened()
    assert exc.value.reason == "AUDIT_UNAVAILABLE"
    ticket.failed(exc.value)
    await audit.drain(5.0)
    assert failures.labels("open")._value.get() == 1
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


async def test_a_query_that_never_started_leaves_no_row_and_a_late_start_is_still_closed(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    audit = QueryAudit(DatasetRepository(pool), _failures())
    never = audit.ticket([_record()], NO_COLUMNS)  # e.g. refused at admission: nothing was read
    never.failed(asyncio.CancelledError())
    started = audit.ticket([_record()], NO_COLUMNS)
    started.open()
    started.open()  # once only
    started.succeeded(0)
    started.failed(asyncio.CancelledError())  # the first close wins
    # Cancelled while the query thread was starting: the close comes before the open.
    late = audit.ticket([_record()], NO_COLUMNS)
    late.failed(asyncio.CancelledError())
    late.open()
    await audit.drain(5.0)
    rows = await db.fetch("SELECT outcome, row_count, failure_reason FROM query_audit ORDER BY id")
    assert [tuple(r) for r in rows] == [("ok", 0, None), ("failed", None, "CANCELLED")]


async def test_closes_are_retried_until_postgres_takes_them_and_drained_on_shutdown(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    failures = _failures()
    audit = QueryAudit(DatasetRepository(pool), failures, retry_seconds=0.05)
    first = audit.ticket([_record()], NO_COLUMNS)
    await first.opened()
    await refuse_audit_writes(db, "UPDATE")
    first.succeeded(7)

    async def refused() -> bool:
        return failures.labels("close")._value.get() >= 2

    await eventually(refused)
    assert await db.fetchval("SELECT outcome FROM query_audit") == "running"
    await db.execute("DROP TRIGGER refuse ON query_audit")
    second = audit.ticket([_record()], NO_COLUMNS)
    await second.opened()
    second.failed(asyncio.CancelledError())
    await audit.drain(5.0)  # returns once every pending close is written
    rows = await db.fetch("SELECT outcome, row_count, failure_reason FROM query_audit ORDER BY id")
    assert [tuple(r) for r in rows] == [("ok", 7, None), ("failed", None, "CANCELLED")]


async def test_a_close_that_keeps_failing_is_given_up_without_blocking_later_ones(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    failures = _failures()
    audit = QueryAudit(DatasetRepository(pool), failures, retry_seconds=0.01, max_attempts=3)
    poisoned = audit.ticket([_record()], NO_COLUMNS)
    await poisoned.opened()
    # A row this close can never update (say, a constraint a future bug breaks).
    await refuse_audit_writes(db, "UPDATE", "OLD.row_count IS NULL AND NEW.row_count = 13")
    poisoned.succeeded(13)
    await audit.drain(5.0)
    assert failures.labels("close")._value.get() == 3
    later = audit.ticket([_record()], NO_COLUMNS)
    await later.opened()
    later.succeeded(1)
    await audit.drain(5.0)
    rows = await db.fetch("SELECT outcome, row_count FROM query_audit ORDER BY id")
    assert [tuple(r) for r in rows] == [("running", None), ("ok", 1)]


async def test_a_query_over_several_datasets_opens_a_row_for_each_or_none(
    pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    """All rows in one transaction: a refusal of any one leaves none (the answer is refused),
    and the rows written together are closed together with one outcome."""
    audit = QueryAudit(DatasetRepository(pool), _failures())
    records = [_record(), _record(), _record()]
    await refuse_audit_writes(db, "INSERT", f"NEW.dataset_uuid = '{records[2].dataset_uuid}'")
    refused = audit.ticket(records, NO_COLUMNS)
    with pytest.raises(Unavailable):
        await refused.opened()
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0
    await db.execute("DROP TRIGGER refuse ON query_audit")
    ticket = audit.ticket(records, NO_COLUMNS)
    await ticket.opened()
    ticket.succeeded(7)
    await audit.drain(timeout=5.0)
    rows = await db.fetch("SELECT dataset_uuid::text AS ds, outcome, row_count FROM query_audit ORDER BY id")
    assert [(r["ds"], r["outcome"], r["row_count"]) for r in rows] == [(r.dataset_uuid, "ok", 7) for r in records]
