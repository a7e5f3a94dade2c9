"""The batch RPCs answer each item on its own: one bad item never spoils its neighbours,
and every item is authorized and fenced like its single call."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import Aborted, FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2, dispatcher_pb2_grpc

from .conftest import ORG, claim_new

pb = dispatcher_pb2


@pytest.fixture
def batching(channel: grpc.aio.Channel, settings: Settings) -> BatchingDispatcherClient:
    return BatchingDispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)


async def test_mixed_heartbeat_batch_answers_each_item(batching: BatchingDispatcherClient) -> None:
    (ref_a, cap_a), (ref_b, cap_b) = await claim_new(batching), await claim_new(batching)
    wrong_lease = TaskRef(ref_a.task_id, ref_a.attempt, str(uuid.uuid4()))
    results = await asyncio.gather(
        batching.heartbeat(ref_a, cap_a),
        batching.heartbeat(ref_a, cap_b),  # B's token on A's task
        batching.heartbeat(wrong_lease, cap_a),
        batching.heartbeat(ref_b, ""),
        batching.heartbeat(ref_b, cap_b),
        return_exceptions=True,
    )
    assert not isinstance(results[0], Exception) and not isinstance(results[4], Exception)
    assert isinstance(results[1], PermissionDenied) and results[1].reason == "TOKEN_TASK_MISMATCH"
    assert isinstance(results[2], Aborted) and results[2].reason == "LEASE_MISMATCH"
    assert isinstance(results[3], Unauthenticated) and results[3].reason == "CAPABILITY_TOKEN_MISSING"


async def test_batch_completion_is_fenced_and_idempotent(
    batching: BatchingDispatcherClient, db: asyncpg.Connection
) -> None:
    (ref_a, cap_a), (ref_b, cap_b) = await claim_new(batching), await claim_new(batching)
    stale = TaskRef(ref_b.task_id, ref_b.attempt, str(uuid.uuid4()))
    first, replay, fenced, ok_b = await asyncio.gather(
        batching.complete(ref_a, cap_a),
        batching.complete(ref_a, cap_a),
        batching.complete(stale, cap_b),
        batching.complete(ref_b, cap_b),
        return_exceptions=True,
    )
    assert isinstance(first, pb.CompleteTaskResponse) and isinstance(replay, pb.CompleteTaskResponse)
    assert (first.duplicate, replay.duplicate) == (False, True)
    assert isinstance(fenced, Aborted) and fenced.reason == "LEASE_MISMATCH"
    assert isinstance(ok_b, pb.CompleteTaskResponse) and not ok_b.duplicate
    rows = await db.fetch(
        "SELECT status FROM tasks WHERE id = ANY($1::uuid[])", [uuid.UUID(ref_a.task_id), uuid.UUID(ref_b.task_id)]
    )
    assert [r["status"] for r in rows] == ["completed", "completed"]
    assert await db.fetchval("SELECT count(*) FROM task_attempts WHERE outcome = 'completed'") == 2


async def test_an_operator_rule_refusing_one_item_refuses_only_that_item(
    batching: BatchingDispatcherClient, db: asyncpg.Connection
) -> None:
    """A cryo_ingest completion without its publication and a plain one travel in one
    batch: the rule refuses the first, the second completes."""
    (ref_a, cap_a), (ref_b, cap_b) = await claim_new(batching, "cryo_ingest"), await claim_new(batching)
    refused, ok = await asyncio.gather(
        batching.complete(ref_a, cap_a), batching.complete(ref_b, cap_b), return_exceptions=True
    )
    assert isinstance(refused, FailedPrecondition) and refused.reason == "PUBLICATION_REQUIRED"
    assert isinstance(ok, pb.CompleteTaskResponse) and not ok.duplicate
    status = "SELECT status FROM tasks WHERE id = $1"
    assert await db.fetchval(status, uuid.UUID(ref_a.task_id)) == "running"
    assert await db.fetchval(status, uuid.UUID(ref_b.task_id)) == "completed"
    await batching.heartbeat(ref_a, cap_a)  # heartbeats of rule-bearing operators batch like any


async def test_batch_claim_one_winner_per_task(batching: BatchingDispatcherClient, db: asyncpg.Connection) -> None:
    ids = await batching.create_tasks([pb.TaskSpec(org_id=ORG, operator="noop") for _ in range(3)])
    calls = [batching.claim(task_id, f"w{i}") for task_id in ids for i in range(3)]
    calls.append(batching.claim("not-a-uuid", "w"))
    *results, bad = await asyncio.gather(*calls, return_exceptions=True)
    claimed = [r for r in results if isinstance(r, pb.ClaimTaskResponse) and r.WhichOneof("result") == "claimed"]
    assert sorted(r.claimed.task.task_id for r in claimed) == sorted(ids)
    assert len({r.claimed.capability_token for r in claimed}) == 3
    assert isinstance(bad, InvalidArgument)
    assert await db.fetchval("SELECT count(*) FROM task_attempts") == 3


async def test_batch_rpcs_check_credentials(channel: grpc.aio.Channel, settings: Settings) -> None:
    task_id = (await claim_new(BatchingDispatcherClient(channel, **_tokens(settings))))[0].task_id
    wrong = BatchingDispatcherClient(channel, worker_token="not-the-token")
    with pytest.raises(PermissionDenied):
        await wrong.claim(task_id, "w")
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await stub.HeartbeatTasks(pb.HeartbeatTasksRequest())
    assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _tokens(settings: Settings) -> dict[str, str | None]:
    return {"worker_token": settings.worker_token, "admin_token": settings.admin_token}
