from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest

from tests.api_support import make_user
from tests.conftest import eventually
from trace_platform.adapters.objectstore.factory import datasets_uri
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import DeliverySettings, Settings, SinkSettings
from trace_platform.core.models import TaskRef
from trace_platform.core.publication import output_prefix
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.workers.cryo_ingest import storage_ref_for

ORG = "00000000-0000-0000-0000-0000000000aa"


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[RunningPlatform]:
    running = await start_platform(settings, migrate=False)
    yield running
    await running.stop(grace=0.5)


@pytest.fixture
async def channel(platform: RunningPlatform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        yield ch


@pytest.fixture(params=["single", "batching"])
def client(request: pytest.FixtureRequest, channel: grpc.aio.Channel, settings: Settings) -> DispatcherClient:
    """Every test through both clients: one RPC per call, and calls coalesced into the
    batch RPCs (which must answer every item exactly as the single call would)."""
    cls = BatchingDispatcherClient if request.param == "batching" else DispatcherClient
    return cls(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)


async def claim_new(client: DispatcherClient, operator: str = "noop", **spec: object) -> tuple[TaskRef, str]:
    """Create a task and claim it directly; returns its fencing ref and capability token."""
    task_id = (await client.create_tasks([dispatcher_pb2.TaskSpec(org_id=ORG, operator=operator, **spec)]))[0]
    resp = await client.claim(task_id, f"w-{uuid.uuid4().hex[:6]}")
    assert resp.WhichOneof("result") == "claimed"
    return TaskRef(task_id, resp.claimed.attempt, resp.claimed.lease_token), resp.claimed.capability_token


async def claim_declaring(
    client: DispatcherClient, db: asyncpg.Connection, outputs: list[dict[str, object]], org_id: str = ORG
) -> tuple[TaskRef, str]:
    """Create a task, record ``outputs`` as the outputs it was created for (what the trusted
    chain_sync planner writes into tasks.declared_outputs), and claim it."""
    task_id = (await client.create_tasks([dispatcher_pb2.TaskSpec(org_id=org_id, operator="noop")]))[0]
    await db.execute(
        "UPDATE tasks SET declared_outputs = $2::jsonb WHERE id = $1", uuid.UUID(task_id), json.dumps(outputs)
    )
    resp = await client.claim(task_id, f"w-{uuid.uuid4().hex[:6]}")
    assert resp.WhichOneof("result") == "claimed"
    return TaskRef(task_id, resp.claimed.attempt, resp.claimed.lease_token), resp.claimed.capability_token


def publication_at_home(
    settings: Settings, dataset_uuid: str, dataset_version: str, **fields: Any
) -> common_pb2.DatasetPublication:
    """A publication whose storage is the version's own location (where cryo_ingest writes)."""
    prefix = output_prefix(datasets_uri(settings), dataset_uuid, dataset_version)
    return common_pb2.DatasetPublication(
        dataset_uuid=dataset_uuid, dataset_version=dataset_version, storage_ref=storage_ref_for(prefix), **fields
    )


@pytest.fixture
def objects_uri(settings: Settings) -> str:
    return f"file://{settings.data_dir / 'objects'}"


@pytest.fixture
def local_store(settings: Settings) -> LocalObjectStore:
    (settings.data_dir / "objects").mkdir(parents=True, exist_ok=True)
    return LocalObjectStore([settings.data_dir / "objects"])


@pytest.fixture
def query_client(channel: grpc.aio.Channel) -> QueryClient:
    return QueryClient(channel)


async def user_client(
    channel: grpc.aio.Channel, settings: Settings, org_id: str = ORG, subject: str = "ada", role: str = "viewer"
) -> ApiQueryClient:
    """A public-API query client for ``subject``, made a member of ``org_id`` first (the
    Query Service serves members only)."""
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        user = await make_user(pool, settings, role, org_id, subject)
    finally:
        await pool.close()
    return ApiQueryClient(channel, token=user.token)


async def claim_with_grants(client: DispatcherClient, grants: list[common_pb2.DatasetGrant]) -> tuple[TaskRef, str]:
    return await claim_new(client, datasets=grants)


async def closed_audit_rows(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """Every ``query_audit`` row, once none is 'running' (a query's outcome is recorded just
    after its answer), oldest first."""

    async def none_running() -> bool:
        return not await db.fetchval("SELECT count(*) FROM query_audit WHERE outcome = 'running'")

    await eventually(none_running)
    return list(await db.fetch("SELECT * FROM query_audit ORDER BY id"))


async def refuse_audit_writes(db: asyncpg.Connection, event: str, when: str = "TRUE") -> None:
    """Make PostgreSQL refuse ``event`` (INSERT or UPDATE) on ``query_audit`` rows matching
    ``when`` (a trigger condition over OLD/NEW), until ``DROP TRIGGER refuse ON query_audit``."""
    await db.execute(
        "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$;"
        f"CREATE TRIGGER refuse BEFORE {event} ON query_audit FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION refuse()"
    )


def fast_alert_settings(settings: Settings) -> Settings:
    """Sink and delivery loops fast enough for tests, delivering to a loopback receiver
    that speaks plain http (outside tests both are refused by default)."""
    return replace(
        settings,
        sink=SinkSettings(poll_interval_seconds=0.2, retry_base_seconds=0.05, retry_max_seconds=0.2),
        delivery=DeliverySettings(
            interval_seconds=0.05,
            retry_base_seconds=0.05,
            retry_max_seconds=0.2,
            max_attempts=3,
            timeout_seconds=2,
            allowed_networks=("127.0.0.0/8",),
            allow_http=True,
        ),
    )
