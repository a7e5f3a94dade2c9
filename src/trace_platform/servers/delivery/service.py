"""Delivery loop: lease due deliveries (SKIP LOCKED, leased_until), POST each event to
its webhook with ``Idempotency-Key: <delivery id>``, record the outcome.

2xx -> delivered. Anything else -> retrying with exponential backoff, or failed after
``max_attempts``. A channel whose URL left its definition, or whose destination the
sender refuses (``DESTINATION_FORBIDDEN``), fails at once. Outcomes are
fenced by (delivery id, attempt, lease owner): an instance whose lease ran out and was
taken over cannot overwrite the new attempt's result. Logs name the delivery id and the
destination host only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry

from trace_platform.adapters.postgres.delivery_repository import DeliveryRepository, DueDelivery
from trace_platform.adapters.webhook import WebhookSender
from trace_platform.core.config import DeliverySettings
from trace_platform.servers.common import failure_log
from trace_platform.servers.delivery.metrics import DeliveryMetrics, channel_type

log = logging.getLogger(__name__)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class DeliveryService:
    def __init__(
        self,
        repo: DeliveryRepository,
        sender: WebhookSender,
        settings: DeliverySettings,
        owner: str = "",
        metrics: DeliveryMetrics | None = None,
    ) -> None:
        self.metrics = metrics or DeliveryMetrics(CollectorRegistry())
        self._repo = repo
        self._sender = sender
        self._settings = settings
        self.owner = owner or f"delivery-{uuid.uuid4().hex[:12]}"

    async def step(self) -> int:
        s = self._settings
        due = await self._repo.lease_due(s.batch, s.lease_seconds, self.owner)
        if due:
            await asyncio.gather(*(self.deliver(d) for d in due))
        return len(due)

    async def deliver(self, d: DueDelivery) -> None:
        s = self._settings
        extra = {"delivery_id": d.delivery_id, "attempt": d.attempt}
        channel = channel_type(d.channel)
        if d.url is None or not d.channel.startswith("webhook:"):
            gone = await self._repo.mark_attempt_failed(
                d,
                self.owner,
                None,
                "CHANNEL_NOT_FOUND",
                s.max_attempts,
                s.retry_base_seconds,
                s.retry_max_seconds,
                give_up=True,
            )
            self.metrics.attempts.labels(channel, gone or "lease_lost").inc()
            if gone == "failed":  # None: the lease was lost, the new owner decides and logs
                failure_log.delivery_gave_up(d.delivery_id, d.attempt, d.channel, "CHANNEL_NOT_FOUND", org_id=d.org_id)
            return
        extra["host"] = _host(d.url)
        body = json.dumps(d.event, separators=(",", ":")).encode()
        started = time.perf_counter()
        result = await self._sender.post_json(d.url, body, d.delivery_id)
        self.metrics.latency.labels(channel).observe(time.perf_counter() - started)
        if result.ok:
            assert result.status is not None
            recorded = await self._repo.mark_delivered(d, self.owner, result.status)
            self.metrics.attempts.labels(channel, "delivered" if recorded else "lease_lost").inc()
            log.info("delivered", extra={**extra, "status": result.status, "recorded": recorded})
            return
        status = await self._repo.mark_attempt_failed(
            d,
            self.owner,
            result.status,
            result.error,
            s.max_attempts,
            s.retry_base_seconds,
            s.retry_max_seconds,
            give_up=result.permanent,
        )
        self.metrics.attempts.labels(channel, status or "lease_lost").inc()
        reason = failure_log.reason_code(result.error)
        if status == "failed":
            failure_log.delivery_gave_up(
                d.delivery_id,
                d.attempt,
                d.channel,
                reason,
                org_id=d.org_id,
                host=extra["host"],
                http_status=result.status,
            )
        else:  # retrying (or the lease was lost): not yet an operator's problem
            log.info("delivery attempt failed", extra={**extra, "reason": reason, "now": status or "lease lost"})

    async def close(self) -> None:
        await self._sender.close()
