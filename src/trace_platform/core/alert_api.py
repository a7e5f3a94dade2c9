"""Alert definitions, events and deliveries as the user API shows them.

A webhook URL may embed a secret (a token in its path or query): it is accepted on
create and update and never shown again. What is shown is ``webhook_display`` (scheme,
host and port) and the channel key that deliveries name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

SEVERITIES = ("info", "warning", "critical")
DELIVERY_STATUSES = ("pending", "sending", "delivered", "retrying", "failed")
MAX_DESCRIPTION_CHARS = 1024


def webhook_display(url: str) -> str:
    """``scheme://host[:port]``: nothing of the path, query, fragment or userinfo."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unreadable url)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


@dataclass(frozen=True)
class WebhookView:
    key: str
    display: str


@dataclass(frozen=True)
class AlertInfo:
    alert_id: str
    name: str
    description: str
    severity: str | None
    enabled: bool
    webhooks: tuple[WebhookView, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AlertEventInfo:
    event_id: str
    alert_id: str
    severity: str | None
    chain_id: int | None
    block_number: int | None
    block_hash: str | None
    tx_hash: str | None
    dedupe_key: str
    payload_json: str
    event_time: datetime
    created_at: datetime


@dataclass(frozen=True)
class AlertDeliveryInfo:
    delivery_id: str
    event_id: str
    alert_id: str
    webhook: WebhookView
    status: str
    attempts: int
    last_response_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AlertChanges:
    """An update: None leaves a field as it is."""

    webhook_urls: tuple[str, ...] | None = None
    enabled: bool | None = None
    description: str | None = None
    severity: str | None = None
