"""Retries, the lease reaper, the outbox and the worker runtime against real servers."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace

import asyncpg
import pytest

from tests.conftest import eventually
from trace_platform.adapters.invoker.base import no_result_error
from trace_platform.app import RunningPlatform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

from .conftest import ORG, claim_declaring, claim_new, publication_at_home

pb = dispatcher_pb2


def counting_operator(calls: list[str], delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def run(ctx: OperatorContext) -> OperatorResult:
        calls.append(ctx.task.task_id)
        await asyncio.sleep(delay)
        return OperatorResult()

    return run


async def run_worker(platform: RunningPlatform, client: DispatcherClient, operators, until) -> WorkerRuntime:  # type: ignore[no-untyped-def]
    worker = WorkerRuntime(platform.queue, client, operators, platform.settings.worker)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(until, timeout=15)
    finally:
        loop.cancel()
        await worker.stop()
    return worker


async def test_task_flows_from_create_to_completed_through_queue(
    client: DispatcherClient, platform: RunningPlatform, db: asyncpg.Connection
) -> None:
    calls: list[str] = []
    task_id = await client.create_task(ORG, "count")

    async def done() -> bool:
        completed = (await client.get_task(task_id)).task.status == common_pb2.TASK_STATUS_COMPLETED
        # The ack follows CompleteTask's answer; stopping the worker before it would race.
        return completed and await db.fetchval("SELECT count(*) FROM queue_messages") == 0

    await run_worker(platform, client, {"count": counting_operator(calls)}, done)
    assert calls == [task_id]
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0
    assert await db.fetchval("SELECT count(*) FROM queue_messages") == 0  # acknowledged


async def test_duplicate_wakeups_run_the_operator_once(client: DispatcherClient, platform: RunningPlatform) -> None:
    calls: list[str] = []
    task_id = await client.create_task(ORG, "count")
    await platform.queue.publish("tasks", [{"task_id": task_id}] * 5)

    async def settled() -> bool:
        done = (await client.get_task(task_id)).task.status == common_pb2.TASK_STATUS_COMPLETED
        return done and await platform.queue.depth("tasks") == 0

    await run_worker(platform, client, {"count": counting_operator(calls, delay=0.2)}, settled)
    assert calls == [task_id]


async def test_max_attempts_exhausted_gives_terminal_failed(
    client: DispatcherClient, platform: RunningPlatform, db: asyncpg.Connection
) -> None:
    task_id = (await client.create_tasks([pb.TaskSpec(org_id=ORG, operator="fail", max_attempts=3)]))[0]

    async def terminal() -> bool:
        return (await client.get_task(task_id)).terminal

    from trace_platform.workers.operators import BUILTIN_OPERATORS

    await run_worker(platform, client, BUILTIN_OPERATORS, terminal)
    resp = await client.get_task(task_id)
    assert resp.task.status == common_pb2.TASK_STATUS_FAILED
    assert resp.task.attempt == 3
    assert not resp.HasField("next_retry_at")
    assert [a.outcome for a in resp.attempts] == ["failed", "failed", "failed"]
    assert "asked to fail" in resp.error_message
    await asyncio.sleep(0.3)  # the retry scheduler must leave it alone
    assert await db.fetchval("SELECT attempt FROM tasks WHERE id = $1", uuid.UUID(task_id)) == 3


async def test_retry_backoff_grows_and_is_capped(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref, cap = await claim_new(client, max_attempts=5)
    resp = await client.complete(ref, cap, pb.COMPLETION_STATUS_FAILED, error_message="x")
    assert resp.status == common_pb2.TASK_STATUS_FAILED and resp.HasField("next_retry_at")
    delay = await db.fetchval(
        "SELECT extract(epoch FROM next_retry_at - finished_at) FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)
    )
    assert 0.04 <= float(delay) <= 0.1  # base 0.05 s for attempt 1
    capped = await db.fetchval("SELECT extract(epoch FROM trace_next_retry_at(9, 10, 0.05, 0.2) - now())")
    assert 0.19 <= float(capped) <= 0.21
    assert await db.fetchval("SELECT trace_next_retry_at(3, 3, 1, 10)") is None


async def test_a_permanent_failure_schedules_no_retry(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref, cap = await claim_new(client, max_attempts=5)
    with pytest.raises(InvalidArgument) as exc:  # only a failure can be final
        await client.complete(ref, cap, pb.COMPLETION_STATUS_COMPLETED, permanent=True)
    assert exc.value.reason == "INVALID_PERMANENT"
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"
    resp = await client.complete(ref, cap, pb.COMPLETION_STATUS_FAILED, error_message="udf/X: y", permanent=True)
    assert resp.status == common_pb2.TASK_STATUS_FAILED and not resp.HasField("next_retry_at")
    await asyncio.sleep(0.3)  # base retry 0.05 s: a scheduled retry would have claimed attempt 2
    task = await client.get_task(ref.task_id)
    assert task.terminal and task.task.attempt == 1 and not task.HasField("next_retry_at")
    # The same completion again is a replay, not a second failure.
    again = await client.complete(ref, cap, pb.COMPLETION_STATUS_FAILED, error_message="udf/X: y", permanent=True)
    assert again.duplicate


async def test_the_worker_fails_a_contract_breaking_answer_once_and_retries_a_passing_fault(
    client: DispatcherClient, platform: RunningPlatform, db: asyncpg.Connection
) -> None:
    async def bad_answer(ctx: OperatorContext) -> OperatorResult:
        raise FailedPrecondition("UDF_RESULT_INVALID", "the UDF result is invalid", category="udf")

    async def killed(ctx: OperatorContext) -> OperatorResult:
        raise no_result_error("UDF_KILLED")

    final = (await client.create_tasks([pb.TaskSpec(org_id=ORG, operator="bad", max_attempts=3)]))[0]
    passing = (await client.create_tasks([pb.TaskSpec(org_id=ORG, operator="killed", max_attempts=2)]))[0]

    async def both_terminal() -> bool:
        return (await client.get_task(final)).terminal and (await client.get_task(passing)).terminal

    await run_worker(platform, client, {"bad": bad_answer, "killed": killed}, both_terminal)
    bad = await client.get_task(final)
    assert [a.outcome for a in bad.attempts] == ["failed"] and bad.task.attempt == 1
    assert bad.error_message.startswith("udf/UDF_RESULT_INVALID:")
    assert [a.outcome for a in (await client.get_task(passing)).attempts] == ["failed", "failed"]
    assert await db.fetchval("SELECT next_retry_at FROM tasks WHERE id = $1", uuid.UUID(final)) is None


# A retry an hour away: the test's fast retries would otherwise requeue the task (a new
# attempt) before the late reply arrives, under load.
@pytest.mark.dispatcher_settings(retry_base_seconds=3600.0, retry_max_seconds=3600.0)
async def test_lease_reaper_retries_and_late_reply_of_current_attempt_is_accepted(
    client: DispatcherClient, db: asyncpg.Connection
) -> None:
    ref, cap = await claim_new(client, max_attempts=2)
    # Expire the lease; keep the retry far away so the late reply still meets this attempt.
    await db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1", uuid.UUID(ref.task_id)
    )

    async def reaped() -> bool:
        row = await db.fetchrow("SELECT status, next_retry_at FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
        return bool(row["status"] == "failed" and row["next_retry_at"] is not None)

    await eventually(reaped)
    with pytest.raises(FailedPrecondition) as exc:
        await client.heartbeat(ref, cap)
    assert exc.value.reason == "LEASE_EXPIRED"
    late = await client.complete(ref, cap)
    assert not late.duplicate and late.status == common_pb2.TASK_STATUS_COMPLETED
    outcome = await db.fetchval("SELECT outcome FROM task_attempts WHERE task_id = $1", uuid.UUID(ref.task_id))
    assert outcome == "completed"


async def test_events_are_deduplicated_and_routed_through_outbox(
    client: DispatcherClient, db: asyncpg.Connection
) -> None:
    ref, cap = await claim_new(client)
    ev = common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()), cursor=42)
    assert await client.emit_events(ref, cap, [ev]) == 1
    assert await client.emit_events(ref, cap, [ev]) == 0
    await client.complete(ref, cap, events=[ev])
    assert await db.fetchval("SELECT count(*) FROM task_events") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'route_event'") == 1


async def test_dataset_versions_register_idempotently_and_conflicts_roll_back(
    client: DispatcherClient, db: asyncpg.Connection, settings: Settings
) -> None:
    ds, ver = str(uuid.uuid4()), str(uuid.uuid4())
    declared = [{"dataset_uuid": ds, "dataset_version": ver, "config_hash": "", "range_start": 0, "range_end": 100}]
    pub = publication_at_home(settings, ds, ver, range_start=0, range_end=100)
    for _ in range(2):
        ref, cap = await claim_declaring(client, db, declared)
        await client.complete(ref, cap, datasets_published=[pub])
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 1
    other = publication_at_home(settings, ds, ver, range_start=0, range_end=100)
    other.storage_ref.glob = "other-*.parquet"  # same place, other objects: other storage
    ev = common_pb2.DatasetEvent(dataset_uuid=ds, dataset_version=ver, cursor=1)
    ref, cap = await claim_declaring(client, db, declared)
    with pytest.raises(FailedPrecondition) as exc:
        await client.complete(ref, cap, datasets_published=[other], events=[ev])
    assert exc.value.reason == "DATASET_VERSION_CONFLICT"
    # The whole completion rolled back: still running, no event written.
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"
    assert await db.fetchval("SELECT count(*) FROM task_events") == 0


async def _state_counts(db: asyncpg.Connection) -> tuple[int, ...]:
    tables = ("tasks", "task_attempts", "outbox", "task_events", "buffered_publishes", "dataset_versions")
    return tuple([await db.fetchval(f"SELECT count(*) FROM {t}") for t in tables])


@pytest.mark.parametrize(
    "spec, reason",
    [
        (dict(org_id="not-a-uuid", operator="noop"), "INVALID_UUID"),
        (dict(operator="noop"), "MISSING_FIELD"),
        (dict(org_id=ORG, operator=""), "INVALID_NAME"),
        (dict(org_id=ORG, operator="Bad Name!"), "INVALID_NAME"),
        (dict(org_id=ORG, operator="noop", config_json="[1]"), "INVALID_JSON"),
        (dict(org_id=ORG, operator="noop", config_json="{nope"), "INVALID_JSON"),
        (dict(org_id=ORG, operator="noop", config_json=json.dumps({"x": "y" * 300_000})), "PAYLOAD_TOO_LARGE"),
        (dict(org_id=ORG, operator="noop", max_attempts=-1), "INVALID_MAX_ATTEMPTS"),
        (dict(org_id=ORG, operator="noop", task_id="123"), "INVALID_UUID"),
    ],
)
async def test_malformed_create_is_invalid_argument_and_writes_nothing(
    client: DispatcherClient, db: asyncpg.Connection, spec: dict[str, object], reason: str
) -> None:
    before = await _state_counts(db)
    good = pb.TaskSpec(org_id=ORG, operator="noop")
    with pytest.raises(InvalidArgument) as exc:
        await client.create_tasks([good, pb.TaskSpec(**spec)])  # the good one must not land either
    assert exc.value.reason == reason
    assert await _state_counts(db) == before


async def test_malformed_task_scoped_requests_are_invalid_argument(
    client: DispatcherClient, db: asyncpg.Connection, platform: RunningPlatform
) -> None:
    ref, cap = await claim_new(client)
    before = await _state_counts(db)
    bad_refs = [
        TaskRef("nope", 1, ref.lease_token),
        TaskRef(ref.task_id, -1, ref.lease_token),
        TaskRef(ref.task_id, 0, ref.lease_token),
        TaskRef(ref.task_id, 1, "not-a-lease"),
        TaskRef("", 1, ref.lease_token),
    ]
    for bad in bad_refs:
        with pytest.raises(InvalidArgument):
            await client.complete(bad, cap)
    with pytest.raises(InvalidArgument) as exc:
        await client.claim("zzz", "w")
    assert exc.value.reason == "INVALID_UUID"
    with pytest.raises(InvalidArgument) as no_status:
        await client.complete(ref, cap, status=pb.COMPLETION_STATUS_UNSPECIFIED)
    assert no_status.value.reason == "INVALID_STATUS"
    bad_event = common_pb2.DatasetEvent(dataset_uuid="x", dataset_version=str(uuid.uuid4()))
    with pytest.raises(InvalidArgument):
        await client.complete(ref, cap, events=[bad_event])
    many = [common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()))] * 1001
    with pytest.raises(InvalidArgument) as too_many:
        await client.emit_events(ref, cap, many)
    assert too_many.value.reason == "TOO_MANY_EVENTS"
    uri = f"{platform.settings.scratch_uri}/{ref.task_id}/1/b.jsonl"
    for kwargs, reason in [
        (dict(batch_uri=uri, size=-5), "INVALID_BATCH_SIZE"),
        (dict(batch_uri="http://evil/x", size=1), "INVALID_BATCH_URI"),
        (dict(batch_uri=uri + "/../../x", size=1), "INVALID_BATCH_URI"),
        (dict(batch_uri=uri, size=1, content_type="text/csv"), "INVALID_CONTENT_TYPE"),
        (dict(batch_uri=uri, size=1, dedupe_scope="Bad Scope"), "INVALID_NAME"),
    ]:
        batch_uri, size = kwargs.pop("batch_uri"), kwargs.pop("size")
        with pytest.raises(InvalidArgument) as bad:
            await client.buffer_publish(ref, cap, batch_uri, size, **kwargs)  # type: ignore[arg-type]
        assert bad.value.reason == reason
    assert await _state_counts(db) == before
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"


class CountingQueue:
    """The platform's real queue, counting the ack calls made through it."""

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self._inner = inner
        self.ack_calls: list[int] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    async def ack(self, queue: str, messages) -> None:  # type: ignore[no-untyped-def]
        self.ack_calls.append(len(messages))
        await self._inner.ack(queue, messages)


async def test_slots_finishing_together_share_one_ack(
    client: DispatcherClient, platform: RunningPlatform, db: asyncpg.Connection
) -> None:
    n = 24
    await client.create_tasks([pb.TaskSpec(org_id=ORG, operator="count") for _ in range(n)])
    await eventually(lambda: _queued_wakeups(db, n), timeout=10)
    calls: list[str] = []
    queue = CountingQueue(platform.queue)
    settings = replace(platform.settings.worker, concurrency=n, receive_batch=n)
    worker = WorkerRuntime(queue, client, {"count": counting_operator(calls)}, settings)  # type: ignore[arg-type]
    assert await worker.run_once() == n
    await worker.drain()
    assert sorted(calls) == sorted(set(calls)) and len(calls) == n
    assert sum(queue.ack_calls) == n  # every wake-up acknowledged exactly once
    assert len(queue.ack_calls) < n  # ... in shared DELETEs, not one per task
    assert await db.fetchval("SELECT count(*) FROM queue_messages") == 0


async def _queued_wakeups(db: asyncpg.Connection, n: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM queue_messages") == n)


async def test_a_multi_row_publish_notifies_listeners_once_per_queue(
    platform: RunningPlatform, db: asyncpg.Connection
) -> None:
    heard: list[str] = []
    await db.add_listener("trace_queue", lambda *args: heard.append(args[3]))
    await platform.queue.publish("test_alpha", [{"n": i} for i in range(50)])
    await platform.queue.publish("test_beta", [{"n": 1}])

    async def both_heard() -> bool:
        return len(heard) >= 2

    await eventually(both_heard, timeout=5)
    await asyncio.sleep(0.2)  # room for any further notification to arrive
    assert sorted(heard) == ["test_alpha", "test_beta"]
    # One trigger call per INSERT statement, not per row (TRIGGER_TYPE_ROW is bit 0).
    tgtype = await db.fetchval("SELECT tgtype FROM pg_trigger WHERE tgname = 'queue_messages_notify'")
    assert tgtype & 1 == 0


async def test_no_index_covers_the_lease_so_heartbeats_can_be_hot(db: asyncpg.Connection) -> None:
    """A heartbeat changes only lease_expires_at; with that column in no index (key or
    predicate) PostgreSQL can update the row in place without index insertions."""
    defs = await db.fetch("SELECT indexdef FROM pg_indexes WHERE tablename = 'tasks'")
    assert defs
    assert not [d["indexdef"] for d in defs if "lease_expires_at" in d["indexdef"]]
    options = await db.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'tasks'")
    assert "fillfactor=80" in options  # room on the page for the new row version
