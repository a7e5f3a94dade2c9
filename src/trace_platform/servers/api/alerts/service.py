"""AlertService logic: alert definitions of the caller's org, their events and
deliveries. Webhook URLs go in through the wall and never come back out."""

from __future__ import annotations

from trace_platform.adapters.postgres.alert_repository import AlertApiRepository
from trace_platform.core.alert_api import (
    MAX_DESCRIPTION_CHARS,
    SEVERITIES,
    AlertChanges,
    AlertDeliveryInfo,
    AlertEventInfo,
    AlertInfo,
)
from trace_platform.core.errors import InvalidArgument, NotFound
from trace_platform.core.paging import PageRequest
from trace_platform.core.validation import require_text, require_uuid
from trace_platform.servers.api.alerts.webhooks import WebhookWall
from trace_platform.servers.api.identity import Principal


def _alert_not_found() -> NotFound:
    # The same answer for an id that does not exist and one of another org.
    return NotFound("ALERT_NOT_FOUND", "no alert with this id")


def _description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument("INVALID_DESCRIPTION", f"at most {MAX_DESCRIPTION_CHARS} characters", field="description")
    return require_text("description", value)


def _severity(value: str | None) -> str | None:
    if value is not None and value not in SEVERITIES:
        raise InvalidArgument("INVALID_SEVERITY", "severity must be info, warning or critical", field="severity")
    return value


class AlertService:
    def __init__(self, repo: AlertApiRepository, wall: WebhookWall) -> None:
        self._repo = repo
        self._wall = wall

    async def create(
        self,
        who: Principal,
        name: str,
        webhook_urls: list[str],
        *,
        description: str = "",
        severity: str | None = None,
        enabled: bool = True,
    ) -> AlertInfo:
        require_text("name", name)
        channels = self._wall.channels(name, webhook_urls)
        return await self._repo.create(
            who.org_id,
            name,
            channels,
            enabled=enabled,
            description=_description(description),
            severity=_severity(severity),
        )

    async def list_alerts(self, who: Principal, page_size: int, page_token: str) -> tuple[list[AlertInfo], str]:
        page = PageRequest.parse(page_size, page_token)
        after = page.after_created()
        rows = await self._repo.page(who.org_id, after, page.size + 1)
        return page.page_by_created(rows, lambda a: (a.created_at, a.alert_id))

    async def get(self, who: Principal, alert_id: str) -> AlertInfo:
        found = await self._repo.get(who.org_id, require_uuid("alert_id", alert_id))
        if found is None:
            raise _alert_not_found()
        return found

    async def update(self, who: Principal, alert_id: str, changes: AlertChanges) -> AlertInfo:
        alert_id = require_uuid("alert_id", alert_id)
        channels = None
        if changes.webhook_urls is not None:
            current = await self.get(who, alert_id)  # NOT_FOUND before any URL is judged
            channels = self._wall.channels(current.name, list(changes.webhook_urls))
        updated = await self._repo.update(
            who.org_id,
            alert_id,
            channels=channels,
            enabled=changes.enabled,
            description=None if changes.description is None else _description(changes.description),
            severity=_severity(changes.severity),
        )
        if updated is None:
            raise _alert_not_found()
        return updated

    async def disable(self, who: Principal, alert_id: str) -> AlertInfo:
        return await self.update(who, alert_id, AlertChanges(enabled=False))

    async def events(
        self, who: Principal, alert_id: str, page_size: int, page_token: str
    ) -> tuple[list[AlertEventInfo], str]:
        alert = await self.get(who, alert_id)
        page = PageRequest.parse(page_size, page_token)
        after = page.after_created()
        rows = await self._repo.events(who.org_id, alert.alert_id, after, page.size + 1)
        return page.page_by_created(rows, lambda e: (e.created_at, e.event_id))

    async def deliveries(
        self, who: Principal, alert_id: str, event_id: str, page_size: int, page_token: str
    ) -> tuple[list[AlertDeliveryInfo], str]:
        if bool(alert_id) == bool(event_id):
            raise InvalidArgument("MISSING_FIELD", "give exactly one of alert_id and event_id", field="alert_id")
        page = PageRequest.parse(page_size, page_token)
        after = page.after_created()
        if alert_id:
            alert_id = (await self.get(who, alert_id)).alert_id
        else:
            event_id = require_uuid("event_id", event_id)
            if not await self._repo.event_exists(who.org_id, event_id):
                raise NotFound("ALERT_EVENT_NOT_FOUND", "no alert event with this id")
        rows = await self._repo.deliveries(
            who.org_id, alert_id=alert_id or None, event_id=event_id or None, after=after, limit=page.size + 1
        )
        return page.page_by_created(rows, lambda d: (d.created_at, d.delivery_id))
