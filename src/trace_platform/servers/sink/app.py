"""Composition of the sink (consumer loop + SinkService) and, apart, of the Delivery Service loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.factory import artifact_stores, scratch_uri
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.delivery_repository import DeliveryRepository
from trace_platform.adapters.queue.base import Queue
from trace_platform.adapters.webhook import DestinationPolicy, WebhookSender
from trace_platform.core.config import Settings
from trace_platform.servers.common.background import BackgroundTasks
from trace_platform.servers.common.loop import Loop
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.delivery.metrics import DeliveryMetrics
from trace_platform.servers.delivery.service import DeliveryService
from trace_platform.servers.sink.consumer import BatchReader, SinkConsumer, SinkProcessor
from trace_platform.servers.sink.metrics import SinkMetrics
from trace_platform.servers.sink.servicer import SinkServicer, sink_binding

# The sink signals it when a batch made new events; the delivery loop waits on it, so a
# new event's webhooks go out at once instead of at the loop's next poll.
DELIVERY_WAKEUP = "delivery"


@dataclass
class SinkComponents:
    """The SinkService and the consumer of the 'buffers' queue (woken by its NOTIFY)."""

    binding: ServiceBinding
    consumer: SinkConsumer
    _running: BackgroundTasks = field(default_factory=BackgroundTasks)

    def start(self) -> None:
        self._running.start({"sink": self.consumer.run()})

    async def stop(self) -> None:
        await self._running.stop()


@dataclass
class DeliveryComponents:
    """The Delivery Service: its loop leases due alert_deliveries from PostgreSQL, so it
    may run in any process; no gRPC service of its own."""

    delivery: DeliveryService
    loop: Loop
    _running: BackgroundTasks = field(default_factory=BackgroundTasks)

    def start(self) -> None:
        self._running.start({"delivery": self.loop.run()})

    async def stop(self) -> None:
        await self._running.stop()
        await self.delivery.close()


def build_sink(
    pool: asyncpg.Pool,
    queue: Queue,
    settings: Settings,
    stores: ObjectStores | None = None,
    registry: CollectorRegistry | None = None,
    on_new_events: Callable[[], None] | None = None,
) -> SinkComponents:
    s = settings.sink
    reader = BatchReader(stores or artifact_stores(settings), s.max_batch_bytes, scratch_uri(settings))
    processor = SinkProcessor(AlertRepository(pool), reader, s, on_new_events)
    return SinkComponents(
        binding=sink_binding(SinkServicer(processor, settings.admin_token)),
        consumer=SinkConsumer(processor, queue, s, SinkMetrics(registry or CollectorRegistry())),
    )


def build_delivery(
    pool: asyncpg.Pool,
    settings: Settings,
    registry: CollectorRegistry | None = None,
    wait: Callable[[float], Awaitable[None]] | None = None,
) -> DeliveryComponents:
    d = settings.delivery
    sender = WebhookSender(
        d.timeout_seconds,
        d.max_response_bytes,
        DestinationPolicy.parse(d.allowed_networks),
        allow_http=d.allow_http,
    )
    delivery = DeliveryService(
        DeliveryRepository(pool), sender, d, metrics=DeliveryMetrics(registry or CollectorRegistry())
    )
    return DeliveryComponents(delivery, Loop("delivery", delivery.step, d.interval_seconds, d.batch, wait=wait))
