"""Issue 13, hole 6: a PII column read through a rename left no PII audit row.

A real platform serves a dataset whose ``email`` column is classified. Each query below
returns (or filters on) ``email`` under another name, through a user's Query and a task's
TaskQuery alike; each must leave a ``pii_access_audit`` row naming ``email``, tied to its
``query_audit`` row. ``FROM dataset t(a, b, x)`` renames by position, which the gate cannot
resolve without the schema, so it is audited as reading every classified column.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.datasets import FIXTURE_ROWS, FixtureDataset, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, closed_audit_rows, user_client
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import Settings
from trace_platform.core.sql_gate import sql_sha256

NAME = "fixture.pii"
RENAMED = [
    "SELECT x FROM dataset t(a, b, x) ORDER BY x",  # FIXTURE_ROWS: dedupe_key, block_number, email
    "WITH c(k, e) AS (SELECT dedupe_key, email FROM dataset) SELECT e FROM c ORDER BY e",
    "SELECT y FROM (SELECT e AS y FROM (SELECT email AS e FROM dataset) s) t ORDER BY y",
    "SELECT dedupe_key FROM dataset WHERE email LIKE 'a%'",
    "SELECT count(*) FROM dataset a JOIN dataset b USING (email)",
]


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[RunningPlatform, grpc.aio.Channel]]:
    running = await start_platform(settings, migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as channel:
            yield running, channel
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def classified(served: tuple[RunningPlatform, grpc.aio.Channel], settings: Settings) -> FixtureDataset:
    (settings.data_dir / "objects").mkdir(parents=True, exist_ok=True)
    store = LocalObjectStore([settings.data_dir / "objects"])
    ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(served[0].pool).publish(ORG, NAME, ds.publication, ["email"])
    return ds


async def _pii_columns_of(db: asyncpg.Connection, sql: str) -> list[list[str]]:
    audits = [r["id"] for r in await closed_audit_rows(db) if r["sql_sha256"] == sql_sha256(sql)]
    assert len(audits) == 1, sql
    rows = await db.fetch("SELECT columns FROM pii_access_audit WHERE query_audit_id = $1", audits[0])
    return [list(r["columns"]) for r in rows]


@pytest.mark.parametrize("sql", RENAMED)
async def test_a_renamed_pii_column_is_audited_for_a_user(
    sql: str,
    served: tuple[RunningPlatform, grpc.aio.Channel],
    classified: FixtureDataset,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    out = await (await user_client(served[1], settings)).query(NAME, sql)
    assert out.rows
    assert await _pii_columns_of(db, sql) == [["email"]]


async def test_a_renamed_pii_column_is_audited_for_a_task(
    served: tuple[RunningPlatform, grpc.aio.Channel],
    classified: FixtureDataset,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    dispatcher = DispatcherClient(served[1], worker_token=settings.worker_token, admin_token=settings.admin_token)
    ref, cap = await claim_with_grants(dispatcher, [classified.grant_pb])
    query = QueryClient(served[1])
    for sql in RENAMED[:2]:
        out = await query.task_query(cap, ref.task_id, ref.attempt, classified.dataset_uuid, sql)
        assert sorted(r[0] for r in out.rows) == FIXTURE_ROWS["email"]
        assert await _pii_columns_of(db, sql) == [["email"]]
    plain = "SELECT dedupe_key FROM dataset"
    await query.task_query(cap, ref.task_id, ref.attempt, classified.dataset_uuid, plain)
    assert await _pii_columns_of(db, plain) == []
