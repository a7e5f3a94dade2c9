"""The composition root: settings -> pool, queue, servicers, server, loops, worker.

``trace lite up``, ``trace dispatcher serve`` and the integration tests all start
the platform through ``start_platform``; only the settings differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import grpc

from trace_platform.adapters.invoker.base import RuntimeInvoker
from trace_platform.adapters.invoker.local import LocalInvoker
from trace_platform.adapters.objectstore.factory import artifact_stores, datasets_uri, object_stores, scratch_uri
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.cryo_task import OPERATOR as OPERATOR_CRYO
from trace_platform.servers.chain_sync.app import build_chain_sync
from trace_platform.servers.common.metrics import MetricsEndpoint, process_registry
from trace_platform.servers.common.server import GrpcServer, start_server
from trace_platform.servers.dispatcher.app import Dispatcher, build_dispatcher, load_key_ring
from trace_platform.servers.invoker.app import RuntimeInvokerApp, build_invoker_app, build_runtime_invoker
from trace_platform.servers.query.app import QueryServer, build_query_server
from trace_platform.servers.sink.app import SinkComponents, build_sink
from trace_platform.workers.alert_evaluate import OPERATOR as OPERATOR_ALERT
from trace_platform.workers.alert_evaluate import alert_evaluate_operator
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
    invoker: RuntimeInvokerApp
    sink: SinkComponents | None = None
    worker: WorkerRuntime | None = None
    worker_channel: grpc.aio.Channel | None = None
    worker_task: asyncio.Task[None] | None = None
    metrics: MetricsEndpoint | None = None

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
        await self.invoker.close()
        await self.dispatcher.stop_loops()
        if self.sink is not None:
            await self.sink.stop()
        await self.queue.close()
        await self.pool.close()
        if self.metrics is not None:
            self.metrics.close()


def with_task_endpoint(settings: Settings, addr: str) -> Settings:
    """UDFs reach the platform's task APIs at ``addr`` unless an endpoint is configured."""
    if settings.invoker.task_endpoint:
        return settings
    return replace(settings, invoker=replace(settings.invoker, task_endpoint=addr))


def point_invoker_at(invoker: RuntimeInvoker, addr: str) -> None:
    """The Lite invoker bridges UDFs to the platform's own address unless configured otherwise."""
    if isinstance(invoker, LocalInvoker) and not invoker.settings.task_endpoint:
        invoker.settings = replace(invoker.settings, task_endpoint=addr)


def platform_operators(
    settings: Settings, addr: str, invoker: Callable[[], RuntimeInvoker] | None = None
) -> dict[str, Operator]:
    """Operators that need the platform's settings (stores, RPC pools, staging, invoker)."""
    settings = with_task_endpoint(settings, addr)
    return {
        OPERATOR_CRYO: cryo_ingest_operator(
            settings.data_dir / "staging" / "cryo", settings.rpc_pools, object_stores(settings), datasets_uri(settings)
        ),
        OPERATOR_ALERT: alert_evaluate_operator(
            invoker or (lambda: build_runtime_invoker(settings)),
            addr,
            artifact_stores(settings),
            scratch_uri(settings),
            settings.invoker.limits.timeout_seconds,
        ),
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
    # One registry for every service of this process, served on one endpoint.
    registry = process_registry()
    dispatcher = build_dispatcher(pool, queue, settings, ring, registry)
    chain_sync_binding, chain_sync_loops = build_chain_sync(pool, settings, dispatcher.loops[0].wakeup.set, registry)
    dispatcher.loops.extend(chain_sync_loops)
    dispatcher.service.on_datasets_published = chain_sync_loops[0].wakeup.set

    async def local_jwks() -> dict[str, Any]:
        return ring.jwks() if ring is not None else {"keys": []}

    query = build_query_server(pool, settings, local_jwks, stores, registry)
    await query.start()
    invoker = build_invoker_app(settings, registry=registry)
    sink = build_sink(pool, queue, settings, sink_stores, registry)
    bindings = [dispatcher.binding, chain_sync_binding, query.binding, invoker.binding, sink.binding]
    server = await start_server(bindings, settings.listen)
    platform = RunningPlatform(settings, pool, queue, dispatcher, server, query, invoker, sink)
    if settings.metrics_listen:
        platform.metrics = MetricsEndpoint(registry, settings.metrics_listen)
    point_invoker_at(invoker.invoker, platform.addr)
    if run_loops:
        dispatcher.start_loops()
        sink.start()
    if run_worker:
        channel = grpc.aio.insecure_channel(platform.addr)
        client = BatchingDispatcherClient(channel, worker_token=settings.worker_token)
        shared = invoker.metered
        all_operators = {**platform_operators(settings, platform.addr, lambda: shared), **operators}
        platform.worker = WorkerRuntime(queue, client, all_operators, settings.worker)
        platform.worker_channel = channel
        platform.worker_task = asyncio.create_task(platform.worker.run(), name="worker")
    return platform
