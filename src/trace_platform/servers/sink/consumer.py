"""The buffer sink consumer: queue 'buffers' -> trusted publish record -> batch artifact
-> strict validation -> one transaction (upsert events, route deliveries, mark applied).

Queue messages are wake-ups only: the publish record in Postgres is the truth, so a
duplicate or late message for a publish that is already applied or dead-lettered is
acknowledged without work. Permanent problems with the batch (a bad row, a missing,
oversized or disallowed artifact) dead-letter the whole batch and write nothing.
Transient problems (object store or database unreachable) leave the message to
reappear after a backoff; they never dead-letter.

Second wall: the Dispatcher admits a batch only under its attempt's scratch prefix; the
Sink checks it again on the record it reads (``<scratch>/<task_id>/<attempt>/``,
normalised, no traversal) before touching the store, so a record written any other way
(a bug, a hand-made row) cannot make it read another attempt's, org's or dataset's
objects. Anything else is dead-lettered as ``BATCH_LOCATION_NOT_ALLOWED``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.alert_repository import AlertRepository, PublishRecord
from trace_platform.adapters.queue.base import Message, Queue
from trace_platform.core.alert_rows import BatchRejected, parse_batch
from trace_platform.core.config import SinkSettings
from trace_platform.core.errors import FailedPrecondition, NotFound, PermissionDenied
from trace_platform.core.storage_paths import attempt_prefix, is_under
from trace_platform.servers.common import failure_log
from trace_platform.servers.common.loop import Loop
from trace_platform.servers.sink.metrics import SinkMetrics

log = logging.getLogger(__name__)
BUFFER_QUEUE = "buffers"
# Content errors the database reports despite validation: retrying cannot help.
PERMANENT_DB_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass(frozen=True)
class Applied:
    rows: int  # rows in the batch
    new_events: int  # events this publish created (the rest were duplicates)


class BatchReader:
    """Reads a publish's batch artifact through the object stores, only from under that
    publish's attempt prefix in ``scratch_uri``; permanent failures become
    ``BatchRejected`` (row 0), ``Unavailable`` passes through as transient."""

    def __init__(self, stores: ObjectStores, max_bytes: int, scratch_uri: str) -> None:
        self._stores = stores
        self._max_bytes = max_bytes
        self._scratch = scratch_uri

    async def read(self, publish: PublishRecord) -> bytes:
        uri = publish.batch_uri
        if not is_under(uri, attempt_prefix(self._scratch, publish.task_id, publish.attempt)):
            raise BatchRejected("BATCH_LOCATION_NOT_ALLOWED", 0)
        try:
            store = self._stores.for_uri(uri)
            return await asyncio.to_thread(store.get_bytes, uri, self._max_bytes)
        except NotFound:
            raise BatchRejected("BATCH_NOT_FOUND", 0) from None
        except PermissionDenied:
            raise BatchRejected("BATCH_LOCATION_NOT_ALLOWED", 0) from None
        except FailedPrecondition:
            raise BatchRejected("BATCH_TOO_LARGE", 0) from None


class SinkProcessor:
    """Reads, validates and applies one publish; shared by the consumer and replay."""

    def __init__(
        self,
        repo: AlertRepository,
        reader: BatchReader,
        settings: SinkSettings,
        on_new_events: Callable[[], None] | None = None,
    ) -> None:
        self.repo = repo
        self._reader = reader
        self._settings = settings
        # Wakes the delivery loop: the deliveries of new events are due at once.
        self._on_new_events = on_new_events

    async def apply(self, publish: PublishRecord, from_status: str) -> Applied | None:
        """None: the publish left ``from_status`` meanwhile. Raises ``BatchRejected``."""
        data = await self._reader.read(publish)
        if len(data) > 1 << 20:
            rows = await asyncio.to_thread(parse_batch, data, self._settings.max_batch_rows)
        else:
            rows = parse_batch(data, self._settings.max_batch_rows)
        try:
            created = await self.repo.apply_batch(publish, rows, from_status)
        except PERMANENT_DB_ERRORS as exc:
            log.info(  # the dead-letter line that follows is the one an operator acts on
                "database refused a validated batch",
                extra={"publish_id": publish.publish_id, "error": type(exc).__name__},
            )
            raise BatchRejected("DATABASE_REJECTED", 0) from None
        if created and self._on_new_events is not None:
            self._on_new_events()
        return None if created is None else Applied(len(rows), created)


class SinkConsumer:
    def __init__(
        self, processor: SinkProcessor, queue: Queue, settings: SinkSettings, metrics: SinkMetrics | None = None
    ) -> None:
        self.metrics = metrics or SinkMetrics(CollectorRegistry())
        self._processor = processor
        self._repo = processor.repo
        self._queue = queue
        self._settings = settings

    async def run(self) -> None:
        """Until cancelled: a new message wakes it at once (the queue's wait), else it polls."""
        s = self._settings
        wait = functools.partial(self._queue.wait, BUFFER_QUEUE)
        await Loop("sink", self.step, s.poll_interval_seconds, s.receive_batch, wait=wait).run()

    async def step(self) -> int:
        s = self._settings
        messages = await self._queue.receive(BUFFER_QUEUE, s.receive_batch, s.visibility_seconds)
        if messages:
            await asyncio.gather(*(self.handle(m) for m in messages))
        return len(messages)

    async def handle(self, message: Message) -> None:
        try:
            done = await self._handle(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transient: store or database unreachable, or a bug
            log.warning(
                "sink will retry message",
                extra={"message_id": message.id, "receives": message.receive_count, "error": type(exc).__name__},
            )
            done = False
            self.metrics.batches.labels("retry").inc()
        if done:
            await self._queue.ack(BUFFER_QUEUE, [message])
        else:
            await self._queue.change_visibility(BUFFER_QUEUE, [message], self.backoff(message.receive_count))

    def backoff(self, receive_count: int) -> float:
        s = self._settings
        return float(min(s.retry_base_seconds * 2 ** max(receive_count - 1, 0), s.retry_max_seconds))

    async def _handle(self, message: Message) -> bool:
        """True when the message needs nothing more (ack)."""
        raw = message.payload.get("publish_id")
        try:
            publish_id = str(uuid.UUID(str(raw)))
        except ValueError:
            log.error("buffer message without a publish id dropped", extra={"message_id": message.id})
            self.metrics.batches.labels("dropped").inc()
            return True
        publish = await self._repo.get_publish(publish_id)
        if publish is None:
            log.error("buffer message for an unknown publish dropped", extra={"publish_id": publish_id})
            self.metrics.batches.labels("dropped").inc()
            return True
        if publish.status != "pending":
            self.metrics.batches.labels("duplicate").inc()
            return True  # a duplicate wake-up: the publish was applied or dead-lettered
        started = time.perf_counter()
        try:
            applied = await self._processor.apply(publish, "pending")
        except BatchRejected as rejected:
            await self._repo.dead_letter(publish, rejected.reason, rejected.row_number)
            self.metrics.duration.observe(time.perf_counter() - started)
            self.metrics.batches.labels("dead_lettered").inc()
            self.metrics.dead_letters.labels(rejected.reason).inc()
            failure_log.batch_dead_lettered(publish_id, publish.task_id, rejected.reason, rejected.row_number)
            return True
        self.metrics.duration.observe(time.perf_counter() - started)
        self.metrics.batches.labels("duplicate" if applied is None else "applied").inc()
        if applied is not None:
            self.metrics.rows.inc(applied.rows)
            self.metrics.new_events.inc(applied.new_events)
            log.info(
                "batch applied",
                extra={"publish_id": publish_id, "rows": applied.rows, "new_events": applied.new_events},
            )
        return True
