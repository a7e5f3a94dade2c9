"""The Query Service as its own least-privilege database role (issue 12, item 4): a
query role process logged in as a member of ``trace_query`` answers user and task
queries and writes its audit rows, and that login can read nothing else and change
no state (real PostgreSQL, real servers)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.conftest import ADMIN_DSN
from tests.datasets import FIXTURE_ROWS, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, closed_audit_rows, user_client
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import EndpointSettings, Settings
from trace_platform.roles.host import RunningRoles, host_roles


@pytest.fixture
async def query_login(settings: Settings) -> AsyncIterator[str]:
    """A login that is only a member of trace_query; its DSN for this test's database."""
    name = f"trace_query_t_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE trace_query')
        assert settings.database_url
        base, _, database = settings.database_url.rpartition("/")
        yield f"postgresql://{name}@{base.rsplit('@', 1)[-1]}/{database}"
    finally:
        await admin.execute(f'DROP OWNED BY "{name}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


@pytest.fixture
async def split(settings: Settings, query_login: str) -> AsyncIterator[tuple[RunningRoles, RunningRoles]]:
    """The dispatcher on the platform's role; the query role alone on the restricted login."""
    dispatcher = await host_roles(settings, ["dispatcher"])
    query_settings = replace(settings, database_url=query_login, endpoints=EndpointSettings(dispatcher=dispatcher.addr))
    query = await host_roles(query_settings, ["query"])
    yield dispatcher, query
    await query.stop(0.5)
    await dispatcher.stop(0.5)


async def test_the_query_role_serves_on_its_own_login(
    settings: Settings, db: asyncpg.Connection, split: tuple[RunningRoles, RunningRoles]
) -> None:
    dispatcher, query = split
    objects = settings.data_dir / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    ds = write_dataset(LocalObjectStore([objects]), f"file://{objects}", [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(dispatcher.pool).publish(ORG, "fixture", ds.publication)
    sql = "SELECT dedupe_key FROM dataset ORDER BY dedupe_key"
    async with grpc.aio.insecure_channel(query.addr) as qch, grpc.aio.insecure_channel(dispatcher.addr) as dch:
        user = await user_client(qch, settings)
        rows = await user.query({"dataset": "fixture"}, sql)
        assert [r[0] for r in rows.rows] == FIXTURE_ROWS["dedupe_key"]
        client = DispatcherClient(dch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_with_grants(client, [ds.grant_pb])
        task_rows = await QueryClient(qch).task_query(cap, ref.task_id, ref.attempt, ds.dataset_uuid, sql)
        assert [r[0] for r in task_rows.rows] == FIXTURE_ROWS["dedupe_key"]
    audits = await closed_audit_rows(db)
    assert [(a["user_id"] is None, a["outcome"]) for a in audits] == [(False, "ok"), (True, "ok")]


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT url FROM (SELECT channels AS url FROM alert_definitions) x",
        "SELECT config FROM tasks",
        "SELECT * FROM bundles",
        "SELECT * FROM outbox",
        "SELECT sql_sha256 FROM query_audit",
        "UPDATE tasks SET status = 'completed'",
        "INSERT INTO dataset_versions (dataset_uuid, dataset_version, storage_ref)"
        " VALUES (gen_random_uuid(), gen_random_uuid(), '{}')",
        "UPDATE datasets SET current_version = NULL",
        "DELETE FROM query_audit",
        "UPDATE query_audit SET org_id = gen_random_uuid()",
        "INSERT INTO memberships (org_id, user_id, role) SELECT org_id, user_id, 'admin' FROM memberships",
        "CREATE TABLE mine (x int)",
    ],
)
async def test_the_query_login_can_read_and_change_nothing_else(query_login: str, statement: str) -> None:
    conn = await asyncpg.connect(query_login)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()
