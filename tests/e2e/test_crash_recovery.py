"""SIGKILL a real Dispatcher mid-outbox and a real worker mid-task: nothing is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid

import asyncpg
import grpc

from tests.conftest import eventually
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.postgres.task_repository import TaskRepository
from trace_platform.app import start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.models import NewTask
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

from .conftest import spawn, trace_env, wait_for_line

ORG = "00000000-0000-0000-0000-0000000000bb"


async def test_dispatcher_sigkill_mid_outbox_loses_no_wakeup(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    # Tasks whose wake-ups wait in the outbox, as an SQS-configured Dispatcher's
    # CreateTasks, the retry scheduler, chain_sync and DAG routing write them (with the
    # PostgreSQL queue, CreateTasks writes the wake-up itself: the test below).
    pool = await create_pool(settings.database_url or "", 1, 2)
    try:
        outboxed = TaskRepository(pool)  # wake-ups through the outbox
        tasks = [NewTask(ORG, "noop", config={}, inputs=[], max_attempts=3) for _ in range(1000)]
        ids = [tid for _ in range(3) for tid in await outboxed.insert_tasks(tasks)]
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 3000
    # Small outbox batches so the relay is still working when we kill it.
    env = trace_env(settings, TRACE_OUTBOX_BATCH="5", TRACE_OUTBOX_INTERVAL_SECONDS="0.01")
    first = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(first)
    wait_for_line(first, r"dispatcher serving on (\S+)")

    async def relay_started() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM queue_messages") > 0)

    await eventually(relay_started, timeout=10, interval=0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    pending_at_kill = await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'")
    assert pending_at_kill > 0, "the relay finished before the kill; the test did not exercise a crash"

    second = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(second)
    wait_for_line(second, r"dispatcher serving on (\S+)")

    async def drained() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0)

    await eventually(drained, timeout=30)
    woken = {str(r["tid"]) for r in await db.fetch("SELECT DISTINCT payload->>'task_id' AS tid FROM queue_messages")}
    assert woken == set(ids)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0


async def test_create_tasks_wakeups_commit_with_the_tasks_on_the_postgres_queue(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    """With the PostgreSQL queue, CreateTasks writes the wake-up messages in the tasks' own
    transaction: once it has answered, every wake-up is in the queue (no outbox row, no
    relay hop), and a SIGKILL of the Dispatcher right then loses none."""
    # A relay that would only poll once an hour: nothing here may depend on it.
    env = trace_env(settings, TRACE_OUTBOX_INTERVAL_SECONDS="3600")
    first = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(first)
    addr = wait_for_line(first, r"dispatcher serving on (\S+)")
    async with grpc.aio.insecure_channel(addr) as channel:
        client = DispatcherClient(channel, admin_token=settings.admin_token)
        specs = [dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop") for _ in range(500)]
        ids = [tid for _ in range(2) for tid in await client.create_tasks(specs)]
        # Idempotent create: an existing id gets no second task and no second wake-up.
        again = dispatcher_pb2.TaskSpec(task_id=ids[0], org_id=ORG, operator="noop")
        assert await client.create_tasks([again]) == [ids[0]]
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0
    rows = await db.fetch("SELECT queue, payload->>'task_id' AS tid FROM queue_messages")
    assert sorted(r["tid"] for r in rows) == sorted(ids)
    assert {r["queue"] for r in rows} == {"tasks"}


async def test_worker_sigkill_mid_task_retries_through_reaper_and_completes_once(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    settings = settings.with_overrides(
        dispatcher=settings.dispatcher.__class__(
            lease_seconds=1.0,
            retry_base_seconds=0.05,
            retry_max_seconds=0.1,
            outbox_interval_seconds=0.05,
            reaper_interval_seconds=0.1,
            retry_interval_seconds=0.05,
        )
    )
    platform = await start_platform(settings, migrate=False)
    try:
        async with grpc.aio.insecure_channel(platform.addr) as channel:
            client = DispatcherClient(channel, admin_token=settings.admin_token, worker_token=settings.worker_token)
            task_id = await client.create_task(ORG, "sleep", {"seconds": 60})
            worker = spawn(["worker", "run", "--addr", platform.addr], trace_env(settings, TRACE_WORKER_ID="doomed"))
            procs.append(worker)

            async def running() -> bool:
                return bool(
                    await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(task_id)) == "running"
                )

            await eventually(running, timeout=20)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)

            completions: list[int] = []

            async def quick(ctx: OperatorContext) -> OperatorResult:
                completions.append(ctx.ref.attempt)
                return OperatorResult()

            runtime = WorkerRuntime(platform.queue, client, {"sleep": quick}, settings.worker)
            loop = asyncio.create_task(runtime.run())

            async def completed() -> bool:
                return (await client.get_task(task_id)).task.status == common_pb2.TASK_STATUS_COMPLETED

            await eventually(completed, timeout=20)
            loop.cancel()
            await runtime.stop()
            resp = await client.get_task(task_id)
        assert completions == [2]
        assert [(a.attempt, a.worker_id, a.outcome) for a in resp.attempts] == [
            (1, "doomed", "lease_expired"),
            (2, "test-worker", "completed"),
        ]
    finally:
        await platform.stop(grace=0.5)
