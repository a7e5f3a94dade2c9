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
from typing import Any

import asyncpg
import grpc

from trace_platform.adapters.objectstore.factory import datasets_uri, object_stores
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.cryo_task import OPERATOR as OPERATOR_CRYO
from trace_platform.servers.chain_sync.app import build_chain_sync
from trace_platform.servers.common.server import GrpcServer, start_server
from trace_platform.servers.dispatcher.app import Dispatcher, build_dispatcher, load_key_ring
from trace_platform.servers.query.app import QueryServer, build_query_server
from trace_platform.servers.sink.app import SinkComponents, build_sink
from trace_platform.workers.cryo_ingest import cryo_ingest_operator
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
    query: QueryServer
    sink: SinkComponents | None = None
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
        await self.query.stop()
        await self.dispatcher.stop_loops()
        if self.sink is not None:
            await self.sink.stop()
        await self.queue.close()
        await self.pool.close()


def platform_operators(settings: Settings) -> dict[str, Operator]:
    """Operators that need the platform's settings (stores, RPC pools, staging)."""
    return {
        OPERATOR_CRYO: cryo_ingest_operator(
            settings.data_dir / "staging" / "cryo", settings.rpc_pools, object_stores(settings), datasets_uri(settings)
        )
    }


async def start_platform(
    settings: Settings,
    *,
    run_loops: bool = True,
    run_worker: bool = False,
    operators: Mapping[str, Operator] = BUILTIN_OPERATORS,
    migrate: bool = True,
    stores: ObjectStores | None = None,
    sink_stores: ObjectStores | None = None,
) -> RunningPlatform:
    if not settings.database_url:
        raise ValueError("database_url is required (Lite starts an embedded one first)")
    if migrate:
        await migrate_dsn(settings.database_url)
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    queue = PostgresQueue(pool)
    ring = load_key_ring(settings)
    dispatcher = build_dispatcher(pool, queue, settings, ring)
    chain_sync_binding, chain_sync_loops = build_chain_sync(pool, settings, dispatcher.loops[0].wakeup.set)
    dispatcher.loops.extend(chain_sync_loops)

    async def local_jwks() -> dict[str, Any]:
        return ring.jwks() if ring is not None else {"keys": []}

    query = build_query_server(pool, settings, local_jwks, stores)
    await query.start(settings.query.metrics_listen)
    sink = build_sink(pool, queue, settings, sink_stores)
    server = await start_server([dispatcher.binding, chain_sync_binding, query.binding, sink.binding], settings.listen)
    platform = RunningPlatform(settings, pool, queue, dispatcher, server, query, sink)
    if run_loops:
        dispatcher.start_loops()
        sink.start()
    if run_worker:
        channel = grpc.aio.insecure_channel(platform.addr)
        client = BatchingDispatcherClient(channel, worker_token=settings.worker_token)
        platform.worker = WorkerRuntime(queue, client, {**platform_operators(settings), **operators}, settings.worker)
        platform.worker_channel = channel
        platform.worker_task = asyncio.create_task(platform.worker.run(), name="worker")
    return platform
