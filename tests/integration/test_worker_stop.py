"""Stopping a worker stops the attempts it runs: the operator is cancelled and its
heartbeats end, nothing keeps running unowned (the lease lapses; the reaper retries)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.conftest import eventually
from trace_platform.app import RunningPlatform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

from .conftest import ORG

pytestmark = pytest.mark.integration


async def test_stop_cancels_the_running_operator_and_its_heartbeats(
    platform: RunningPlatform, client: DispatcherClient, db: asyncpg.Connection
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(ctx: OperatorContext) -> OperatorResult:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return OperatorResult()

    task_id = await client.create_task(ORG, "forever")
    worker = WorkerRuntime(platform.queue, client, {"forever": forever}, platform.settings.worker)
    loop = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 15)
    loop.cancel()
    await worker.stop()
    await asyncio.wait_for(cancelled.wait(), 2)
    # No heartbeat renews the lease any more (the test lease is 5 s, heartbeats every ~1.7 s).
    lease = await db.fetchval("SELECT lease_expires_at FROM tasks WHERE id = $1::uuid", task_id)
    await asyncio.sleep(2.5)
    assert await db.fetchval("SELECT lease_expires_at FROM tasks WHERE id = $1::uuid", task_id) == lease

    async def reaped() -> bool:  # the lapsed lease is reaped and the task offered again
        return bool(
            await db.fetchval("SELECT attempt > 1 OR status <> 'running' FROM tasks WHERE id = $1::uuid", task_id)
        )

    await eventually(reaped, timeout=15)
