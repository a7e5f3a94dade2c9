"""Composition of the AlertService from the api role's dependencies."""

from __future__ import annotations

import asyncpg

from trace_platform.adapters.postgres.alert_repository import AlertApiRepository
from trace_platform.core.config import Settings
from trace_platform.servers.api.alerts.service import AlertService
from trace_platform.servers.api.alerts.servicer import AlertServicer, alert_binding
from trace_platform.servers.api.alerts.webhooks import WebhookWall
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding


def build_alert_binding(pool: asyncpg.Pool, settings: Settings, auth: UserAuthenticator) -> ServiceBinding:
    # The wall uses the Delivery Service's own settings: what is accepted is what is sent.
    return alert_binding(AlertServicer(AlertService(AlertApiRepository(pool), WebhookWall(settings.delivery)), auth))
