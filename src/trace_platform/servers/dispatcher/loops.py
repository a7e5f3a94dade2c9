"""The Dispatcher's background loops: outbox relay, retry scheduler, lease reaper."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.outbox_repository import OutboxRepository, OutboxRow
from trace_platform.adapters.postgres.task_repository import TaskRepository
from trace_platform.adapters.queue.base import Queue
from trace_platform.core.config import DispatcherSettings
from trace_platform.servers.common import failure_log
from trace_platform.servers.common.loop import Loop
from trace_platform.servers.dispatcher.metrics import DispatcherMetrics

log = logging.getLogger(__name__)
BATCH = 500


class OutboxRelay:
    """Delivers outbox rows: task and buffer wake-ups to their queues, and route_event rows
    to the DAG jobs that read the published version (``dags``: DAG routing)."""

    def __init__(
        self,
        outbox: OutboxRepository,
        queue: Queue,
        batch: int,
        metrics: DispatcherMetrics,
        dags: DagRepository | None = None,
    ) -> None:
        self._outbox = outbox
        self._queue = queue
        self.batch = batch
        self._metrics = metrics
        self._dags = dags
        self.on_routed: Callable[[], None] = lambda: None  # the routed tasks' wake-ups wait in the outbox

    async def step(self) -> int:
        route = self._route if self._dags is not None else None
        relayed = await self._outbox.deliver_batch(self.batch, self._deliver, route)
        self._metrics.outbox_relayed.inc(relayed)
        return relayed

    async def _route(self, conn: asyncpg.Connection, rows: list[OutboxRow]) -> set[int]:
        """Exactly one task per (DAG job, upstream version): the ledger's unique key, written
        in this transaction, which also marks these rows done. A routing that fails rolls
        back to its savepoint and its rows stay pending: wake-ups of the batch still go."""
        assert self._dags is not None
        events, ids = [], set()
        for row in rows:
            if row.kind != "route_event":
                continue
            try:
                events.append(
                    (str(uuid.UUID(row.payload["dataset_uuid"])), str(uuid.UUID(row.payload["dataset_version"])))
                )
                ids.add(row.id)
            except (KeyError, TypeError, ValueError):
                log.warning("route_event without a dataset version", extra={"outbox_id": row.id})
        if not events:
            return set()
        try:
            async with conn.transaction():  # a savepoint
                created = await self._dags.route(conn, events)
        except (asyncpg.PostgresError, ValueError, KeyError) as exc:
            log.error("routing failed; its events stay pending", extra={"error": type(exc).__name__})
            return ids
        if created:
            self.on_routed()
        return set()

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        by_queue: defaultdict[str, list[dict[str, object]]] = defaultdict(list)
        for row in rows:
            if row.kind in ("enqueue_task", "enqueue_buffer") and row.queue:
                by_queue[row.queue].append(row.payload)
        for queue, payloads in by_queue.items():
            await self._queue.publish(queue, payloads)


def dispatcher_loops(
    tasks: TaskRepository,
    outbox: OutboxRepository,
    queue: Queue,
    settings: DispatcherSettings,
    metrics: DispatcherMetrics,
    dags: DagRepository | None = None,
) -> list[Loop]:
    """The outbox loop comes first; the others wake it when they write outbox rows."""
    relay = OutboxRelay(outbox, queue, settings.outbox_batch, metrics, dags)
    outbox_loop = Loop("outbox", relay.step, settings.outbox_interval_seconds, settings.outbox_batch)
    relay.on_routed = outbox_loop.wakeup.set

    async def reap() -> int:
        expired = await tasks.reap_expired_leases(BATCH, settings.retry_base_seconds, settings.retry_max_seconds)
        for r in expired:
            failure_log.task_attempt_failed(
                r.task_id, r.attempt, r.operator, "lease expired", r.next_retry_at, r.config_json
            )
        metrics.lease_expiries.inc(len(expired))
        return len(expired)

    async def retry() -> int:
        requeued = await tasks.requeue_due_retries(BATCH)
        metrics.retries.inc(requeued)
        if requeued:
            outbox_loop.wakeup.set()
        return requeued

    return [
        outbox_loop,
        Loop("lease_reaper", reap, settings.reaper_interval_seconds, BATCH),
        Loop("retry_scheduler", retry, settings.retry_interval_seconds, BATCH),
    ]
