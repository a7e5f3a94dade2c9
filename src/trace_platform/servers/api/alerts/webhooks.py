"""The webhook wall at Create and Update: a URL is stored only if the Delivery Service
would send to it. The same rules as every send (``core.webhook_hosts`` for the host's
form, the delivery settings' scheme and network policy for literals); a name is
resolved and checked again at each send, since what it resolves to can change."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from trace_platform.adapters.webhook import DestinationPolicy
from trace_platform.core.alert_definitions import WebhookChannel, validate_definition, validate_webhook_url
from trace_platform.core.config import DeliverySettings
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.webhook_hosts import DESTINATION_FORBIDDEN, webhook_host

_LOOPBACK_NAMES = ("localhost",)


class WebhookWall:
    def __init__(self, settings: DeliverySettings) -> None:
        self._allow_http = settings.allow_http
        self._policy = DestinationPolicy.parse(settings.allowed_networks)

    def check(self, url: str) -> str:
        validate_webhook_url(url)  # form, scheme http(s), host in its final form
        if urlsplit(url).scheme != "https" and not self._allow_http:
            raise InvalidArgument(DESTINATION_FORBIDDEN, "webhooks must use https", field="webhook_urls")
        host = webhook_host(url)
        address = str(host.address) if host.address is not None else None
        if address is None and (host.host in _LOOPBACK_NAMES or host.host.endswith(".localhost")):
            address = "127.0.0.1"  # a name every resolver maps to loopback
        if address is not None and not self._policy.permits(address):
            raise InvalidArgument(
                DESTINATION_FORBIDDEN, "webhook address is not one the platform may reach", field="webhook_urls"
            )
        return url

    def channels(self, name: str, urls: Sequence[str]) -> list[WebhookChannel]:
        for url in urls:
            self.check(url)
        return validate_definition(name, list(urls))
