"""Typed async client of the AlertService: alert definitions, their events and webhook
deliveries. Results are the frozen dataclasses of ``core.alert_api``; a webhook comes
back as its key and scheme+host only (the URL is never returned)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from trace_platform.clients.api.pages import Page, every_item
from trace_platform.clients.errors import call
from trace_platform.core.alert_api import AlertDeliveryInfo, AlertEventInfo, AlertInfo, WebhookView
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.gen.trace.api.v1 import alerts_pb2 as pb
from trace_platform.gen.trace.api.v1 import alerts_pb2_grpc

__all__ = ["AlertDeliveryInfo", "AlertEventInfo", "AlertInfo", "AlertsClient", "Page", "WebhookView"]
T = TypeVar("T")
_SEVERITY = {pb.SEVERITY_INFO: "info", pb.SEVERITY_WARNING: "warning", pb.SEVERITY_CRITICAL: "critical"}
_SEVERITY_PB = {v: k for k, v in _SEVERITY.items()}
_STATUS = {
    pb.DELIVERY_STATUS_PENDING: "pending",
    pb.DELIVERY_STATUS_SENDING: "sending",
    pb.DELIVERY_STATUS_DELIVERED: "delivered",
    pb.DELIVERY_STATUS_RETRYING: "retrying",
    pb.DELIVERY_STATUS_FAILED: "failed",
}


def _severity_pb(severity: str | None) -> pb.Severity.ValueType:
    if severity is None:
        return pb.SEVERITY_UNSPECIFIED
    if severity not in _SEVERITY_PB:
        raise InvalidArgument("INVALID_SEVERITY", "severity must be info, warning or critical", field="severity")
    return _SEVERITY_PB[severity]


def _when(ts: Timestamp, present: bool = True) -> datetime | None:
    return ts.ToDatetime(tzinfo=UTC) if present else None


def _hook(w: pb.Webhook) -> WebhookView:
    return WebhookView(w.key, w.display)


def _alert(a: pb.Alert) -> AlertInfo:
    return AlertInfo(
        a.alert_id,
        a.name,
        a.description,
        _SEVERITY.get(a.severity),
        a.enabled,
        tuple(_hook(w) for w in a.webhooks),
        a.create_time.ToDatetime(tzinfo=UTC),
        a.update_time.ToDatetime(tzinfo=UTC),
    )


def _event(e: pb.AlertEvent) -> AlertEventInfo:
    return AlertEventInfo(
        e.event_id,
        e.alert_id,
        _SEVERITY.get(e.severity),
        e.chain_id or None,
        e.block_number if e.block_number or e.block_hash else None,
        e.block_hash or None,
        e.tx_hash or None,
        e.dedupe_key,
        e.payload_json,
        e.event_time.ToDatetime(tzinfo=UTC),
        e.create_time.ToDatetime(tzinfo=UTC),
    )


def _delivery(d: pb.AlertDelivery) -> AlertDeliveryInfo:
    return AlertDeliveryInfo(
        d.delivery_id,
        d.event_id,
        d.alert_id,
        _hook(d.webhook),
        _STATUS.get(d.status, "unknown"),
        d.attempts,
        d.last_response_code or None,
        d.last_error or None,
        _when(d.last_attempt_time, d.HasField("last_attempt_time")),
        _when(d.next_attempt_time, d.HasField("next_attempt_time")),
        _when(d.deliver_time, d.HasField("deliver_time")),
        d.create_time.ToDatetime(tzinfo=UTC),
    )


class AlertsClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str) -> None:
        self._stub = alerts_pb2_grpc.AlertServiceStub(channel)
        self._md = ((AUTHORIZATION, f"Bearer {token}"),)

    async def create(
        self,
        name: str,
        webhook_urls: Sequence[str],
        *,
        description: str = "",
        severity: str | None = None,
        enabled: bool = True,
    ) -> AlertInfo:
        req = pb.CreateAlertRequest(
            name=name,
            webhook_urls=list(webhook_urls),
            description=description,
            severity=_severity_pb(severity),
            enabled=enabled,
        )
        return _alert((await call(self._stub.CreateAlert(req, metadata=self._md))).alert)

    async def list(self, *, page_size: int = 0, page_token: str = "") -> Page[AlertInfo]:
        req = pb.ListAlertsRequest(page_size=page_size, page_token=page_token)
        resp = await call(self._stub.ListAlerts(req, metadata=self._md))
        return Page([_alert(a) for a in resp.alerts], resp.next_page_token)

    def iterate(self, *, page_size: int = 0) -> AsyncIterator[AlertInfo]:
        return every_item(lambda t: self.list(page_size=page_size, page_token=t))

    async def get(self, alert_id: str) -> AlertInfo:
        resp = await call(self._stub.GetAlert(pb.GetAlertRequest(alert_id=alert_id), metadata=self._md))
        return _alert(resp.alert)

    async def update(
        self,
        alert_id: str,
        *,
        webhook_urls: Sequence[str] | None = None,
        enabled: bool | None = None,
        description: str | None = None,
        severity: str | None = None,
    ) -> AlertInfo:
        """Only the arguments given change."""
        req = pb.UpdateAlertRequest(alert_id=alert_id)
        if webhook_urls is not None:
            req.webhooks.urls.extend(webhook_urls)
            req.webhooks.SetInParent()  # an empty list given is "no webhooks", not "unchanged"
        if enabled is not None:
            req.enabled = enabled
        if description is not None:
            req.description = description
        if severity is not None:
            req.severity = _severity_pb(severity)
        return _alert((await call(self._stub.UpdateAlert(req, metadata=self._md))).alert)

    async def disable(self, alert_id: str) -> AlertInfo:
        resp = await call(self._stub.DisableAlert(pb.DisableAlertRequest(alert_id=alert_id), metadata=self._md))
        return _alert(resp.alert)

    async def events(self, alert_id: str, *, page_size: int = 0, page_token: str = "") -> Page[AlertEventInfo]:
        req = pb.ListAlertEventsRequest(alert_id=alert_id, page_size=page_size, page_token=page_token)
        resp = await call(self._stub.ListAlertEvents(req, metadata=self._md))
        return Page([_event(e) for e in resp.events], resp.next_page_token)

    def iterate_events(self, alert_id: str, *, page_size: int = 0) -> AsyncIterator[AlertEventInfo]:
        return every_item(lambda t: self.events(alert_id, page_size=page_size, page_token=t))

    async def deliveries(
        self, *, alert_id: str = "", event_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> Page[AlertDeliveryInfo]:
        req = pb.ListAlertDeliveriesRequest(
            alert_id=alert_id, event_id=event_id, page_size=page_size, page_token=page_token
        )
        resp = await call(self._stub.ListAlertDeliveries(req, metadata=self._md))
        return Page([_delivery(d) for d in resp.deliveries], resp.next_page_token)

    def iterate_deliveries(
        self, *, alert_id: str = "", event_id: str = "", page_size: int = 0
    ) -> AsyncIterator[AlertDeliveryInfo]:
        return every_item(
            lambda t: self.deliveries(alert_id=alert_id, event_id=event_id, page_size=page_size, page_token=t)
        )
