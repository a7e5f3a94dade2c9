"""AlertService over gRPC: authentication, protobuf in and out; logic in service.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from trace_platform.core.alert_api import AlertChanges, AlertDeliveryInfo, AlertEventInfo, AlertInfo, WebhookView
from trace_platform.core.errors import InvalidArgument
from trace_platform.gen.trace.api.v1 import alerts_pb2 as pb
from trace_platform.gen.trace.api.v1 import alerts_pb2_grpc
from trace_platform.servers.api.alerts.service import AlertService
from trace_platform.servers.api.identity import Role, UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding

Ctx = Any  # grpc.aio.ServicerContext
SEVERITY_PB = {"info": pb.SEVERITY_INFO, "warning": pb.SEVERITY_WARNING, "critical": pb.SEVERITY_CRITICAL}
SEVERITY_OF = {v: k for k, v in SEVERITY_PB.items()}
STATUS_PB = {
    "pending": pb.DELIVERY_STATUS_PENDING,
    "sending": pb.DELIVERY_STATUS_SENDING,
    "delivered": pb.DELIVERY_STATUS_DELIVERED,
    "retrying": pb.DELIVERY_STATUS_RETRYING,
    "failed": pb.DELIVERY_STATUS_FAILED,
}


def _severity_in(value: int) -> str | None:
    if value == pb.SEVERITY_UNSPECIFIED:
        return None
    if value not in SEVERITY_OF:
        raise InvalidArgument("INVALID_SEVERITY", "unknown severity", field="severity")
    return SEVERITY_OF[value]  # type: ignore[index]


def _ts(when: datetime | None, into: Timestamp) -> None:
    if when is not None:
        into.FromDatetime(when)


def _webhook(w: WebhookView) -> pb.Webhook:
    return pb.Webhook(key=w.key, display=w.display)


def alert_pb(a: AlertInfo) -> pb.Alert:
    out = pb.Alert(
        alert_id=a.alert_id,
        name=a.name,
        description=a.description,
        severity=SEVERITY_PB.get(a.severity or "", pb.SEVERITY_UNSPECIFIED),
        enabled=a.enabled,
        webhooks=[_webhook(w) for w in a.webhooks],
    )
    _ts(a.created_at, out.create_time)
    _ts(a.updated_at, out.update_time)
    return out


def event_pb(e: AlertEventInfo) -> pb.AlertEvent:
    out = pb.AlertEvent(
        event_id=e.event_id,
        alert_id=e.alert_id,
        severity=SEVERITY_PB.get(e.severity or "", pb.SEVERITY_UNSPECIFIED),
        chain_id=e.chain_id or 0,
        block_number=e.block_number or 0,
        block_hash=e.block_hash or "",
        tx_hash=e.tx_hash or "",
        dedupe_key=e.dedupe_key,
        payload_json=e.payload_json,
    )
    _ts(e.event_time, out.event_time)
    _ts(e.created_at, out.create_time)
    return out


def delivery_pb(d: AlertDeliveryInfo) -> pb.AlertDelivery:
    out = pb.AlertDelivery(
        delivery_id=d.delivery_id,
        event_id=d.event_id,
        alert_id=d.alert_id,
        webhook=_webhook(d.webhook),
        status=STATUS_PB.get(d.status, pb.DELIVERY_STATUS_UNSPECIFIED),
        attempts=d.attempts,
        last_response_code=d.last_response_code or 0,
        last_error=d.last_error or "",
    )
    _ts(d.last_attempt_at, out.last_attempt_time)
    _ts(d.next_attempt_at, out.next_attempt_time)
    _ts(d.delivered_at, out.deliver_time)
    _ts(d.created_at, out.create_time)
    return out


class AlertServicer(alerts_pb2_grpc.AlertServiceServicer):
    def __init__(self, service: AlertService, auth: UserAuthenticator) -> None:
        self._service = service
        self._auth = auth

    async def CreateAlert(self, request: pb.CreateAlertRequest, context: Ctx) -> pb.CreateAlertResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        alert = await self._service.create(
            who,
            request.name,
            list(request.webhook_urls),
            description=request.description,
            severity=_severity_in(request.severity),
            enabled=request.enabled if request.HasField("enabled") else True,
        )
        return pb.CreateAlertResponse(alert=alert_pb(alert))

    async def ListAlerts(self, request: pb.ListAlertsRequest, context: Ctx) -> pb.ListAlertsResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        items, token = await self._service.list_alerts(who, request.page_size, request.page_token)
        return pb.ListAlertsResponse(alerts=[alert_pb(a) for a in items], next_page_token=token)

    async def GetAlert(self, request: pb.GetAlertRequest, context: Ctx) -> pb.GetAlertResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        return pb.GetAlertResponse(alert=alert_pb(await self._service.get(who, request.alert_id)))

    async def UpdateAlert(self, request: pb.UpdateAlertRequest, context: Ctx) -> pb.UpdateAlertResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        changes = AlertChanges(
            webhook_urls=tuple(request.webhooks.urls) if request.HasField("webhooks") else None,
            enabled=request.enabled if request.HasField("enabled") else None,
            description=request.description if request.HasField("description") else None,
            severity=_severity_in(request.severity),
        )
        return pb.UpdateAlertResponse(alert=alert_pb(await self._service.update(who, request.alert_id, changes)))

    async def DisableAlert(self, request: pb.DisableAlertRequest, context: Ctx) -> pb.DisableAlertResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        return pb.DisableAlertResponse(alert=alert_pb(await self._service.disable(who, request.alert_id)))

    async def ListAlertEvents(self, request: pb.ListAlertEventsRequest, context: Ctx) -> pb.ListAlertEventsResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        items, token = await self._service.events(who, request.alert_id, request.page_size, request.page_token)
        return pb.ListAlertEventsResponse(events=[event_pb(e) for e in items], next_page_token=token)

    async def ListAlertDeliveries(
        self, request: pb.ListAlertDeliveriesRequest, context: Ctx
    ) -> pb.ListAlertDeliveriesResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        items, token = await self._service.deliveries(
            who, request.alert_id, request.event_id, request.page_size, request.page_token
        )
        return pb.ListAlertDeliveriesResponse(deliveries=[delivery_pb(d) for d in items], next_page_token=token)


def alert_binding(servicer: AlertServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["AlertService"].full_name,
        register=lambda server: alerts_pb2_grpc.add_AlertServiceServicer_to_server(servicer, server),
    )
