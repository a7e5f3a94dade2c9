"""The audit write: one statement whose transaction alone skips the WAL flush wait."""

from __future__ import annotations

import hashlib
import uuid

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, QueryAuditRecord
from trace_platform.core.sql_columns import ColumnRefs

ORG = "00000000-0000-0000-0000-0000000000a1"


def _record() -> QueryAuditRecord:
    return QueryAuditRecord(
        org_id=ORG,
        dataset_uuid=str(uuid.uuid4()),
        dataset_version=str(uuid.uuid4()),
        sql_sha256=hashlib.sha256(b"SELECT 1").hexdigest(),
        row_count=3,
        duration_ms=1.5,
        rpc="query",
        user_id="alice",
    )


async def test_audit_row_is_written_and_the_session_keeps_durable_commits(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        record = _record()
        audit_id = await DatasetRepository(pool).record_query(record, ColumnRefs(False, frozenset()))
        row = await pool.fetchrow("SELECT org_id::text, row_count, sql_sha256 FROM query_audit WHERE id = $1", audit_id)
        assert row is not None and (row["org_id"], row["row_count"]) == (ORG, 3)
        assert row["sql_sha256"] == record.sql_sha256
        # The pool's only connection wrote the audit row; its own setting is untouched.
        assert await pool.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await pool.close()


async def test_the_audit_statement_turns_off_the_flush_wait_for_its_own_transaction(db: asyncpg.Connection) -> None:
    r = _record()
    args = (r.org_id, None, None, r.user_id, r.dataset_uuid, r.dataset_version, r.sql_sha256, 3, 1.5, r.rpc, False, [])
    tx = db.transaction()
    await tx.start()
    await db.fetchrow(queries.load("datasets")["record_query"], *args)
    assert await db.fetchval("SHOW synchronous_commit") == "off"
    await tx.rollback()
    assert await db.fetchval("SHOW synchronous_commit") == "on"
