"""The Dispatcher's background loops: outbox relay, retry scheduler, lease reaper.

Each loop runs one batch at a time and repeats immediately while batches are full,
otherwise sleeps for its interval (or until woken). A failed iteration is logged and
retried; state lives in Postgres, so a crash anywhere loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from trace_platform.adapters.postgres.outbox_repository import OutboxRepository, OutboxRow
from trace_platform.adapters.postgres.task_repository import TaskRepository
from trace_platform.adapters.queue.base import Queue
from trace_platform.core.config import DispatcherSettings

log = logging.getLogger(__name__)
BATCH = 500


class Loop:
    def __init__(self, name: str, step: Callable[[], Awaitable[int]], interval: float, full_batch: int) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._full_batch = full_batch
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                done = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("loop iteration failed", extra={"loop": self.name})
                done = 0
            if done >= self._full_batch:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), self._interval)
            self.wakeup.clear()


class OutboxRelay:
    """Delivers outbox rows: task and buffer wake-ups to their queues."""

    def __init__(self, outbox: OutboxRepository, queue: Queue, batch: int) -> None:
        self._outbox = outbox
        self._queue = queue
        self.batch = batch

    async def step(self) -> int:
        return await self._outbox.deliver_batch(self.batch, self._deliver)

    async def _deliver(self, rows: list[OutboxRow]) -> None:
        by_queue: defaultdict[str, list[dict[str, object]]] = defaultdict(list)
        for row in rows:
            if row.kind in ("enqueue_task", "enqueue_buffer") and row.queue:
                by_queue[row.queue].append(row.payload)
            # route_event rows are recorded for lineage; no DAG edges consume them yet.
        for queue, payloads in by_queue.items():
            await self._queue.publish(queue, payloads)


def dispatcher_loops(
    tasks: TaskRepository, outbox: OutboxRepository, queue: Queue, settings: DispatcherSettings
) -> list[Loop]:
    """The outbox loop comes first; the others wake it when they write outbox rows."""
    relay = OutboxRelay(outbox, queue, settings.outbox_batch)
    outbox_loop = Loop("outbox", relay.step, settings.outbox_interval_seconds, settings.outbox_batch)

    async def reap() -> int:
        return await tasks.reap_expired_leases(BATCH, settings.retry_base_seconds, settings.retry_max_seconds)

    async def retry() -> int:
        requeued = await tasks.requeue_due_retries(BATCH)
        if requeued:
            outbox_loop.wakeup.set()
        return requeued

    return [
        outbox_loop,
        Loop("lease_reaper", reap, settings.reaper_interval_seconds, BATCH),
        Loop("retry_scheduler", retry, settings.retry_interval_seconds, BATCH),
    ]
