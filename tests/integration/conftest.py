from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2

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
