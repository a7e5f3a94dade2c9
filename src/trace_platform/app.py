"""The composition root: settings -> pool, queue, servicers, server, loops, worker.

``trace lite up``, ``trace dispatcher serve`` and the integration tests all start
the platform through ``start_platform``; only the settings differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import grpc

from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.core.config import Settings
from trace_platform.servers.common.server import GrpcServer, start_server
from trace_platform.servers.dispatcher.app import Dispatcher, build_dispatcher, load_key_ring
from trace_platform.workers.operators import BUILTIN_OPERATORS
from trace_platform.workers.runtime import Operator, WorkerRuntime

log = logging.getLogger(__name__)


@dataclass
class RunningPlatform:
    settings: Settings
    pool: asyncpg.Pool
    queue: PostgresQueue
    dispatcher: Dispatcher
    server: GrpcServer
    worker: WorkerRuntime | None = None
    worker_channel: grpc.aio.Channel | None = None
    worker_task: asyncio.Task[None] | None = None

    @property
    def addr(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.server.port}"

    async def stop(self, grace: float = 2.0) -> None:
        if self.worker_task is not None:
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
        if self.worker is not None:
            await self.worker.stop()
        if self.worker_channel is not None:
            await self.worker_channel.close()
        await self.server.stop(grace)
        await self.dispatcher.stop_loops()
        await self.queue.close()
        await self.pool.close()


async def start_platform(
    settings: Settings,
    *,
    run_loops: bool = True,
    run_worker: bool = False,
    operators: Mapping[str, Operator] = BUILTIN_OPERATORS,
    migrate: bool = True,
) -> RunningPlatform:
    if not settings.database_url:
        raise ValueError("database_url is required (Lite starts an embedded one first)")
    if migrate:
        await migrate_dsn(settings.database_url)
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    queue = PostgresQueue(pool)
    dispatcher = build_dispatcher(pool, queue, settings, load_key_ring(settings))
    server = await start_server([dispatcher.binding], settings.listen)
    platform = RunningPlatform(settings, pool, queue, dispatcher, server)
    if run_loops:
        dispatcher.start_loops()
    if run_worker:
        channel = grpc.aio.insecure_channel(platform.addr)
        client = BatchingDispatcherClient(channel, worker_token=settings.worker_token)
        platform.worker = WorkerRuntime(queue, client, operators, settings.worker)
        platform.worker_channel = channel
        platform.worker_task = asyncio.create_task(platform.worker.run(), name="worker")
    return platform
