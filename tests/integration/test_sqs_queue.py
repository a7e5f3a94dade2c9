"""The SQS wake-up queue against moto's SQS server on loopback, with a real Dispatcher
(its outbox relay publishes to SQS) and the real worker runtime receiving from it.

PostgreSQL stays the truth: duplicated and reordered wake-ups give exactly one run and
one completion per task, a long task's wake-up stays hidden while it runs (its
visibility is extended, not only its lease), and a wake-up for a finished or unknown
task is deleted without a run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import boto3
import pytest

from tests.conftest import eventually
from tests.moto_server import moto_server
from trace_platform.adapters.queue.base import Message, Queue
from trace_platform.adapters.queue.sqs import SqsQueue
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.channel import insecure_channel
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import QueueSettings, Settings
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

from .conftest import ORG

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_sqs() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def sqs(moto_sqs: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The default credential chain (as IRSA would be on EKS): the environment here.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("sqs", endpoint_url=moto_sqs, region_name=REGION)


@pytest.fixture
def sqs_settings(settings: Settings, sqs: Any, moto_sqs: str) -> Settings:
    """Fresh ``<prefix>-tasks`` and ``<prefix>-buffers`` queues for each test."""
    prefix = f"trace-{uuid.uuid4().hex[:12]}"
    for name in ("tasks", "buffers"):
        sqs.create_queue(QueueName=f"{prefix}-{name}")
    url = sqs.get_queue_url(QueueName=f"{prefix}-tasks")["QueueUrl"].removesuffix("-tasks")
    queue = QueueSettings(backend="sqs", sqs_queue_url=url, sqs_endpoint_url=moto_sqs, sqs_wait_seconds=1)
    return replace(settings, queue=queue)


@pytest.fixture
async def sqs_platform(sqs_settings: Settings) -> AsyncIterator[RunningPlatform]:
    running = await start_platform(sqs_settings, migrate=False)
    yield running
    await running.stop(grace=0.5)


@pytest.fixture
async def worker_client(sqs_platform: RunningPlatform) -> AsyncIterator[DispatcherClient]:
    async with insecure_channel(sqs_platform.addr) as channel:
        yield BatchingDispatcherClient(
            channel, worker_token=sqs_platform.settings.worker_token, admin_token=sqs_platform.settings.admin_token
        )


@dataclass
class RecordingQueue:
    """The platform's queue, recording each wake-up the worker receives (by task id)."""

    inner: Queue
    received: list[str] = field(default_factory=list)

    async def publish(self, queue: str, payloads: Sequence[dict[str, Any]]) -> None:
        await self.inner.publish(queue, payloads)

    async def receive(self, queue: str, max_messages: int, visibility_seconds: float) -> list[Message]:
        messages = await self.inner.receive(queue, max_messages, visibility_seconds)
        self.received += [str(m.payload.get("task_id")) for m in messages]
        return messages

    async def ack(self, queue: str, messages: Sequence[Message]) -> None:
        await self.inner.ack(queue, messages)

    async def change_visibility(self, queue: str, messages: Sequence[Message], seconds: float) -> None:
        await self.inner.change_visibility(queue, messages, seconds)

    async def wait(self, queue: str, timeout: float) -> None:
        await self.inner.wait(queue, timeout)

    async def close(self) -> None:
        await self.inner.close()


def counting(calls: list[str], delay: float = 0.0):  # type: ignore[no-untyped-def]
    async def run(ctx: OperatorContext) -> OperatorResult:
        calls.append(ctx.task.task_id)
        await asyncio.sleep(delay)
        return OperatorResult()

    return run


def in_queue(sqs: Any, url: str) -> int:
    """Visible plus in-flight messages (moto counts them exactly)."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[n]) for n in names)


async def run_worker(
    platform: RunningPlatform, client: DispatcherClient, queue: Queue, calls: list[str], until, delay: float = 0.0
) -> None:  # type: ignore[no-untyped-def]
    worker = WorkerRuntime(queue, client, {"count": counting(calls, delay)}, platform.settings.worker)
    loop = asyncio.create_task(worker.run())
    try:
        await eventually(until, timeout=30, interval=0.1)
    finally:
        loop.cancel()
        await worker.stop()


async def relayed(db: asyncpg.Connection) -> bool:
    return await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0


async def one_completed_attempt_each(db: asyncpg.Connection, task_ids: list[str]) -> None:
    rows = await db.fetch(
        "SELECT task_id::text, attempt, outcome FROM task_attempts WHERE task_id = ANY($1::uuid[]) ORDER BY 1",
        task_ids,
    )
    assert [(r["task_id"], r["attempt"], r["outcome"]) for r in rows] == [(t, 1, "completed") for t in sorted(task_ids)]


def tasks_url(platform: RunningPlatform) -> str:
    assert isinstance(platform.queue, SqsQueue)
    return platform.queue.url("tasks")


async def test_duplicated_wakeups_give_one_completion_per_task(
    sqs_platform: RunningPlatform, worker_client: DispatcherClient, sqs: Any, db: asyncpg.Connection
) -> None:
    task_ids = [await worker_client.create_task(ORG, "count") for _ in range(6)]
    await eventually(lambda: relayed(db))  # the Dispatcher's relay sent one wake-up each to SQS
    await sqs_platform.queue.publish("tasks", [{"task_id": t} for t in task_ids] * 2)  # 3 copies each
    url = tasks_url(sqs_platform)
    assert in_queue(sqs, url) == 18
    calls: list[str] = []
    queue = RecordingQueue(sqs_platform.queue)

    async def settled() -> bool:
        return in_queue(sqs, url) == 0 and len(queue.received) >= 18

    await run_worker(sqs_platform, worker_client, queue, calls, settled, delay=0.3)
    assert sorted(calls) == sorted(task_ids)  # each operator ran once
    assert sorted(queue.received) == sorted(task_ids * 3)  # every copy was received, then deleted
    for t in task_ids:
        assert (await worker_client.get_task(t)).task.status == common_pb2.TASK_STATUS_COMPLETED
    await one_completed_attempt_each(db, task_ids)


async def test_reordered_wakeups_give_one_completion_per_task(
    sqs_platform: RunningPlatform, worker_client: DispatcherClient, sqs: Any, db: asyncpg.Connection
) -> None:
    task_ids = [await worker_client.create_task(ORG, "count") for _ in range(6)]
    await eventually(lambda: relayed(db))
    # Drop the relay's in-order wake-ups, then send them newest first, twice over.
    url = tasks_url(sqs_platform)
    sqs.purge_queue(QueueUrl=url)
    assert in_queue(sqs, url) == 0
    await sqs_platform.queue.publish("tasks", [{"task_id": t} for t in reversed(task_ids)])
    await sqs_platform.queue.publish("tasks", [{"task_id": t} for t in reversed(task_ids)])
    calls: list[str] = []
    queue = RecordingQueue(sqs_platform.queue)

    async def settled() -> bool:
        return in_queue(sqs, url) == 0 and len(queue.received) >= 12

    await run_worker(sqs_platform, worker_client, queue, calls, settled)
    assert sorted(calls) == sorted(task_ids)
    await one_completed_attempt_each(db, task_ids)


# The lease (30 s) outlives the task, so its heartbeat (every 10 s) never runs while it
# does: only the wake-up's own keeper can hold a 2 s visibility over a 5 s task.
@pytest.mark.dispatcher_settings(lease_seconds=30.0)
async def test_long_task_wakeup_stays_hidden_while_it_runs(
    sqs_platform: RunningPlatform, worker_client: DispatcherClient, sqs: Any, db: asyncpg.Connection
) -> None:
    task_id = await worker_client.create_task(ORG, "count")
    await eventually(lambda: relayed(db))
    url = tasks_url(sqs_platform)
    worker_settings = replace(sqs_platform.settings.worker, visibility_seconds=2.0)
    calls: list[str] = []
    queue = RecordingQueue(sqs_platform.queue)
    worker = WorkerRuntime(queue, worker_client, {"count": counting(calls, 5.0)}, worker_settings)
    loop = asyncio.create_task(worker.run())
    try:

        async def done() -> bool:
            status = (await worker_client.get_task(task_id)).task.status
            return status == common_pb2.TASK_STATUS_COMPLETED and in_queue(sqs, url) == 0

        await eventually(done, timeout=30, interval=0.2)
    finally:
        loop.cancel()
        await worker.stop()
    assert calls == [task_id]
    assert queue.received == [task_id]  # received once: it never reappeared while running
    await one_completed_attempt_each(db, [task_id])


async def test_wakeup_for_finished_or_unknown_task_is_deleted_without_a_run(
    sqs_platform: RunningPlatform, worker_client: DispatcherClient, sqs: Any, db: asyncpg.Connection
) -> None:
    task_id = await worker_client.create_task(ORG, "count")
    url = tasks_url(sqs_platform)
    calls: list[str] = []

    async def finished() -> bool:
        status = (await worker_client.get_task(task_id)).task.status
        return status == common_pb2.TASK_STATUS_COMPLETED and in_queue(sqs, url) == 0

    await run_worker(sqs_platform, worker_client, sqs_platform.queue, calls, finished)
    assert calls == [task_id]
    # A long poll cut off by the worker's stop still runs out on the server and would take
    # (hide) what arrives meanwhile: let it expire (sqs_wait_seconds=1) before sending.
    await asyncio.sleep(1.5)
    unknown = str(uuid.uuid4())
    await sqs_platform.queue.publish("tasks", [{"task_id": task_id}, {"task_id": unknown}, {"not": "a task"}])
    assert in_queue(sqs, url) == 3
    queue = RecordingQueue(sqs_platform.queue)

    async def deleted() -> bool:
        return in_queue(sqs, url) == 0

    await run_worker(sqs_platform, worker_client, queue, calls, deleted)
    assert calls == [task_id]  # no second run
    assert sorted(queue.received) == sorted([task_id, unknown, "None"])  # each received once, then deleted
    await one_completed_attempt_each(db, [task_id])


async def test_sqs_queue_batches_and_visibility(sqs_settings: Settings, sqs: Any) -> None:
    """The adapter alone: sends and deletes past SQS's ten per call, hides and shows."""
    queue = await SqsQueue.open(sqs_settings)
    try:
        url = queue.url("tasks")
        await queue.publish("tasks", [{"task_id": str(i)} for i in range(23)])
        assert in_queue(sqs, url) == 23
        got: list[Message] = []
        while len(got) < 23:
            got += await queue.receive("tasks", 16, 30)
        assert sorted(int(m.payload["task_id"]) for m in got) == list(range(23))
        assert all(m.receive_count == 1 and m.receipt for m in got)
        assert await queue.receive("tasks", 10, 30) == []  # all hidden
        await queue.change_visibility("tasks", got[:3], 0)  # shown again at once
        again = await queue.receive("tasks", 10, 30)
        assert sorted(m.id for m in again) == sorted(m.id for m in got[:3])
        assert all(m.receive_count == 2 for m in again)
        await queue.ack("tasks", again + got[3:])  # 23 deletes, three batch calls
        assert in_queue(sqs, url) == 0
        sqs.send_message(QueueUrl=url, MessageBody="not json")
        (odd,) = await queue.receive("tasks", 1, 30)
        assert odd.payload == {}  # consumers drop (ack) an empty payload
    finally:
        await queue.close()


async def test_buffer_wakeups_reach_the_sink_through_sqs_once(
    sqs_platform: RunningPlatform, worker_client: DispatcherClient, sqs: Any, db: asyncpg.Connection
) -> None:
    """The other logical queue: a publish's wake-up goes Dispatcher -> <prefix>-buffers ->
    sink; sent again twice, the batch still lands once."""
    from tests.integration.conftest import claim_new
    from tests.integration.test_sink_delivery import jsonl, publish, rows_for, settled

    assert isinstance(sqs_platform.queue, SqsQueue)
    url = sqs_platform.queue.url("buffers")
    ref, cap = await claim_new(worker_client)
    publish_id, _, _ = await publish(worker_client, ref, cap, jsonl(rows_for(None, 3)))
    await eventually(lambda: settled(db, publish_id), timeout=20)
    assert await db.fetchval("SELECT status FROM buffered_publishes WHERE id = $1", uuid.UUID(publish_id)) == "applied"
    await sqs_platform.queue.publish("buffers", [{"publish_id": publish_id}] * 2)

    async def drained() -> bool:
        return in_queue(sqs, url) == 0

    await eventually(drained, timeout=20)
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 3
    assert await db.fetchval("SELECT count(*) FROM queue_messages") == 0  # PostgreSQL's queue unused


async def test_worker_survives_a_failing_receive(sqs_settings: Settings, worker_client: DispatcherClient) -> None:
    """SQS refusing (here: a queue that does not exist) is logged and retried; the
    worker's loop does not die with it."""
    missing = replace(sqs_settings.queue, sqs_queue_url=sqs_settings.queue.sqs_queue_url + "-absent")
    queue = await SqsQueue.open(replace(sqs_settings, queue=missing))
    worker = WorkerRuntime(queue, worker_client, {}, replace(sqs_settings.worker, poll_interval_seconds=0.05))
    loop = asyncio.create_task(worker.run())
    try:
        await asyncio.sleep(0.5)
        assert not loop.done()
    finally:
        loop.cancel()
        await worker.stop()
        await queue.close()
