"""Alert definitions: webhook URL checks and the identity of a channel.

A delivery row names its channel by a key, not by index or URL: ``webhook:`` and the
first 16 hex digits of the SHA-256 of the URL. The key is stable when channels are
reordered or added (an index would silently re-point old deliveries), one definition
can hold several webhooks, and the URL, which may embed a secret, stays in
``alert_definitions`` only; the Delivery Service resolves key -> URL when it sends.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.webhook_hosts import webhook_host

MAX_URL_CHARS = 2048
MAX_CHANNELS = 16
MAX_NAME_CHARS = 128


def channel_key(url: str) -> str:
    return "webhook:" + hashlib.sha256(url.encode()).hexdigest()[:16]


def validate_webhook_url(url: str) -> str:
    """http(s) with a host in its final form (``webhook_hosts``: no host that an HTTP
    client would normalise into another, e.g. a Unicode spelling of 127.0.0.1); no
    whitespace or control characters; bounded. Whether the host may be contacted (and
    whether plain http is allowed) is the sender's policy, checked on every delivery."""
    if not url or len(url) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        raise InvalidArgument("INVALID_WEBHOOK_URL", "webhook url is malformed", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise InvalidArgument("INVALID_WEBHOOK_URL", "webhook url is malformed", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument("INVALID_WEBHOOK_SCHEME", "webhook url must be http or https", field="url")
    if not parts.hostname or port == 0:
        raise InvalidArgument("INVALID_WEBHOOK_URL", "webhook url needs a host", field="url")
    webhook_host(url)  # DESTINATION_FORBIDDEN for a host that is not in its final form
    return url


@dataclass(frozen=True)
class WebhookChannel:
    url: str

    @property
    def key(self) -> str:
        return channel_key(self.url)

    def as_json(self) -> dict[str, str]:
        return {"type": "webhook", "key": self.key, "url": self.url}


def validate_definition(name: str, webhooks: list[str]) -> list[WebhookChannel]:
    if not name or len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise InvalidArgument("INVALID_NAME", "name is required (at most 128 characters)", field="name")
    if len(webhooks) > MAX_CHANNELS:
        raise InvalidArgument("TOO_MANY_CHANNELS", f"at most {MAX_CHANNELS} channels", field="channels")
    channels: dict[str, WebhookChannel] = {}
    for url in webhooks:
        channel = WebhookChannel(validate_webhook_url(url))
        channels.setdefault(channel.key, channel)  # the same URL twice is one channel
    return list(channels.values())
