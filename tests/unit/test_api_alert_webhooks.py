"""What a webhook shows (scheme and host only) and the wall's decisions at Create/Update,
against the Delivery Service's own settings."""

from __future__ import annotations

import pytest

from trace_platform.core.alert_api import webhook_display
from trace_platform.core.config import DeliverySettings
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import PageRequest, encode_page_token
from trace_platform.servers.api.alerts.webhooks import WebhookWall


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/T0/s3cr3t?token=s3cr3t#frag", "https://hooks.example.com"),
        ("https://Hooks.Example.com:8443/x", "https://hooks.example.com:8443"),
        ("http://127.0.0.1:9000/hook/s3cr3t", "http://127.0.0.1:9000"),
        ("https://[2001:db8::1]:444/s3cr3t", "https://[2001:db8::1]:444"),
        ("https://user:s3cr3t@hooks.example.com/", "https://hooks.example.com"),
        ("https://hooks.example.com:99999/", "(unreadable url)"),
    ],
)
def test_webhook_display_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert webhook_display(url) == shown
    assert "s3cr3t" not in webhook_display(url)


def test_the_wall_follows_the_delivery_settings() -> None:
    strict = WebhookWall(DeliverySettings())
    lite = WebhookWall(DeliverySettings(allow_http=True, allowed_networks=("127.0.0.0/8",)))
    assert strict.check("https://hooks.example.com/x")
    for url in ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://localhost/x", "https://[fe80::1]/"):
        with pytest.raises(InvalidArgument) as refused:
            strict.check(url)
        assert refused.value.reason == "DESTINATION_FORBIDDEN", url
    assert lite.check("http://127.0.0.1:9/x") and lite.check("http://localhost:9/x")
    for url in ("http://10.0.0.1/x", "http://169.254.169.254/", "http://0x7f.1/", "http://127.1/"):
        with pytest.raises(InvalidArgument) as refused:
            lite.check(url)
        assert refused.value.reason == "DESTINATION_FORBIDDEN", url
    with pytest.raises(InvalidArgument) as many:
        strict.channels("x", ["https://hooks.example.com/" + str(i) for i in range(17)])
    assert many.value.reason == "TOO_MANY_CHANNELS"
    assert len(strict.channels("x", ["https://hooks.example.com/a"] * 3)) == 1


ZERO = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    "key",
    [
        {"t": "2026-01-02T03:04:05", "id": ZERO},  # a time without its zone
        {"t": "x", "id": ZERO},
        {"t": "2026-01-02T03:04:05+00:00", "id": "no"},
        {"t": "2026-01-02T03:04:05+00:00"},
        {},
    ],
)
def test_a_page_token_not_issued_here_is_refused(key: dict[str, str]) -> None:
    with pytest.raises(InvalidArgument) as bad:
        PageRequest.parse(10, encode_page_token(key)).after_created()
    assert bad.value.reason == "PAGE_TOKEN_INVALID"


def test_a_page_token_round_trips() -> None:
    page = PageRequest.parse(0, encode_page_token({"t": "2026-01-02T03:04:05.123456+00:00", "id": ZERO}))
    after = page.after_created()
    assert page.size == 100 and after is not None and after[1] == ZERO and after[0].microsecond == 123456
