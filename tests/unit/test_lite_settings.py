"""What `trace lite up` fills in (lite/stack.lite_settings), and that `trace config show
--lite` says the same."""

from __future__ import annotations

from pathlib import Path

from trace_platform.core.config import DeliverySettings, Settings
from trace_platform.core.settings_show import LITE_DEFAULTS
from trace_platform.lite.credentials import LiteCredentials
from trace_platform.lite.stack import lite_settings

CREDS = LiteCredentials("127.0.0.1:50051", "admin-t", "worker-t", "user-secret")


def test_lite_fills_credentials_and_a_developer_webhook_policy() -> None:
    s = lite_settings(Settings(), CREDS)
    assert (s.admin_token, s.worker_token, s.user_auth.hs256_secret) == ("admin-t", "worker-t", "user-secret")
    assert s.delivery.allow_http is True
    assert s.delivery.allowed_networks == ("127.0.0.0/8", "::1/128")  # a receiver on this machine


def test_what_the_operator_set_wins() -> None:
    given = Settings(admin_token="mine", delivery=DeliverySettings(allowed_networks=("10.0.0.0/8",)))
    s = lite_settings(given, CREDS)
    assert s.admin_token == "mine" and s.delivery.allowed_networks == ("10.0.0.0/8",)


def test_config_show_lite_defaults_match_what_lite_does() -> None:
    s = lite_settings(Settings(), CREDS)
    for path in ("delivery.allow_http", "delivery.allowed_networks"):
        value: object = s
        for part in path.split("."):
            value = getattr(value, part)
        assert LITE_DEFAULTS[path](Path("/x"))[0] == value, path
