"""The Dispatcher's background loops: outbox relay, retry scheduler, lease reaper."""

from __future__ import annotations

import logging
from collections import defaultdict

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
    """Delivers outbox rows: task and buffer wake-ups to their queues."""

    def __init__(self, outbox: OutboxRepository, queue: Queue, batch: int, metrics: DispatcherMetrics) -> None:
        self._outbox = outbox
        self._queue = queue
        self.batch = batch
        self._metrics = metrics

    async def step(self) -> int:
        relayed = await self._outbox.deliver_batch(self.batch, self._deliver)
        self._metrics.outbox_relayed.inc(relayed)
        return relayed

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        by_queue: defaultdict[str, list[dict[str, object]]] = defaultdict(list)
        for row in rows:
            if row.kind in ("enqueue_task", "enqueue_buffer") and row.queue:
                by_queue[row.queue].append(row.payload)
            # route_event rows are recorded for lineage; no DAG edges consume them yet.
        for queue, payloads in by_queue.items():
            await self._queue.publish(queue, payloads)


def dispatcher_loops(
    tasks: TaskRepository,
    outbox: OutboxRepository,
    queue: Queue,
    settings: DispatcherSettings,
    metrics: DispatcherMetrics,
) -> list[Loop]:
    """The outbox loop comes first; the others wake it when they write outbox rows."""
    relay = OutboxRelay(outbox, queue, settings.outbox_batch, metrics)
    outbox_loop = Loop("outbox", relay.step, settings.outbox_interval_seconds, settings.outbox_batch)

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
