"""Composition of the Dispatcher: repositories, service, servicer and loops."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.factory import datasets_uri, scratch_uri
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.metrics_repository import MetricsRepository
from trace_platform.adapters.postgres.outbox_repository import OutboxRepository
from trace_platform.adapters.postgres.task_repository import TaskRepository
from trace_platform.adapters.queue.base import Queue
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.core.config import Settings
from trace_platform.core.keys import KeyRing, KeyStore
from trace_platform.core.tokens import TokenIssuer, TokenVerifier
from trace_platform.servers.common.background import BackgroundTasks
from trace_platform.servers.common.loop import Loop
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.dispatcher.loops import dispatcher_loops
from trace_platform.servers.dispatcher.metrics import DispatcherMetrics
from trace_platform.servers.dispatcher.service import DispatcherService
from trace_platform.servers.dispatcher.servicer import DispatcherServicer, dispatcher_binding


def load_key_ring(settings: Settings) -> KeyRing | None:
    if settings.tokens.dev_hs256_secret:
        return None
    key_dir = settings.tokens.key_dir or settings.data_dir / "keys"
    return KeyStore(key_dir).load_or_create()


@dataclass
class Dispatcher:
    service: DispatcherService
    binding: ServiceBinding
    loops: list[Loop]
    wake_outbox: Callable[[], None]  # for components that write outbox rows (chain_sync)
    _running: BackgroundTasks = field(default_factory=BackgroundTasks)

    def start_loops(self) -> None:
        self._running.start({loop.name: loop.run() for loop in self.loops})

    async def stop_loops(self) -> None:
        await self._running.stop()


def build_dispatcher(
    pool: asyncpg.Pool,
    queue: Queue,
    settings: Settings,
    ring: KeyRing | None,
    registry: CollectorRegistry | None = None,
    wake_planner: Callable[[], None] = lambda: None,
) -> Dispatcher:
    # CreateTasks writes its wake-ups in the tasks' own transaction when the queue is in
    # this database; external queues (SQS) get them through the outbox relay.
    tasks = TaskRepository(pool, wakeups_in_transaction=isinstance(queue, PostgresQueue) and queue.stores_in(pool))
    metrics = DispatcherMetrics(registry or CollectorRegistry(), MetricsRepository(pool).dispatcher_snapshot)
    loops = dispatcher_loops(tasks, OutboxRepository(pool), queue, settings.dispatcher, metrics, DagRepository(pool))
    outbox_loop = loops[0]
    tok = settings.tokens
    issuer = TokenIssuer(tok.issuer, tok.ttl_seconds, ring, tok.dev_hs256_secret)
    scratch = scratch_uri(settings)

    async def local_jwks() -> dict[str, Any]:
        return ring.jwks() if ring is not None else {"keys": []}

    verifier = TokenVerifier(
        tok.issuer,
        fetch_jwks=local_jwks,
        dev_hs256_secret=tok.dev_hs256_secret,
        refresh_min_seconds=0.0,
        cache_seconds=tok.jwks_cache_seconds,
        max_lifetime_seconds=tok.ttl_seconds,
    )
    service = DispatcherService(
        tasks,
        issuer,
        settings.dispatcher,
        scratch,
        ring,
        outbox_loop.wakeup.set,
        verifier.remember,
        datasets_uri=datasets_uri(settings),
        metrics=metrics,
        on_datasets_published=wake_planner,
    )
    servicer = DispatcherServicer(service, verifier, settings.worker_token, settings.admin_token)
    return Dispatcher(service, dispatcher_binding(servicer), loops, outbox_loop.wakeup.set)
