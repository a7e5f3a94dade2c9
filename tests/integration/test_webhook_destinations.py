"""Webhook destinations, deny by default: what the policy refuses, and that a refused
destination is never contacted, by IP literal or by a name that resolves to it."""

from __future__ import annotations

import pytest

from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.webhook import DESTINATION_FORBIDDEN, DestinationPolicy, WebhookSender
from trace_platform.core.config import settings_from_env

REFUSED = [
    "127.0.0.1",  # loopback
    "::1",
    "10.1.2.3",  # private
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud instance metadata
    "100.64.0.1",  # shared (carrier-grade NAT)
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "fd00::1",  # unique local
    "fe80::1%eth0",  # link-local with a zone
    "::ffff:127.0.0.1",  # loopback mapped into IPv6
    "::ffff:169.254.169.254",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_global_addresses_are_refused_by_default(address: str) -> None:
    assert not DestinationPolicy().permits(address)


def test_global_addresses_pass_and_listed_networks_are_let_through() -> None:
    assert DestinationPolicy().permits("8.8.8.8")
    assert DestinationPolicy().permits("2606:4700::1111")
    local = DestinationPolicy.parse(["127.0.0.0/8", " ::1/128 "])
    assert local.permits("127.0.0.1") and local.permits("::1") and local.permits("::ffff:127.0.0.1")
    assert not local.permits("10.0.0.1") and not local.permits("169.254.169.254")


def test_allowed_networks_come_from_the_environment_and_typos_fail_at_start() -> None:
    env = {"TRACE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, 10.0.0.0/8"}
    assert settings_from_env(env).delivery.allowed_networks == ("127.0.0.0/8", "10.0.0.0/8")
    assert settings_from_env({}).delivery.allowed_networks == ()
    with pytest.raises(ValueError, match="TRACE_WEBHOOK_ALLOWED_NETWORKS"):
        settings_from_env({"TRACE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/33"})


async def test_a_refused_destination_is_never_contacted() -> None:
    with webhook_receiver() as receiver:
        strict = WebhookSender(2.0, 1024, allow_http=True)
        try:
            for url in (receiver.url("/h"), f"http://localhost:{receiver.port}/h"):
                result = await strict.post_json(url, b"{}", "k1")
                assert (result.ok, result.error, result.permanent) == (False, DESTINATION_FORBIDDEN, True), url
        finally:
            await strict.close()
        assert receiver.requests == []
        allowed = WebhookSender(2.0, 1024, DestinationPolicy.parse(["127.0.0.0/8", "::1/128"]), allow_http=True)
        try:
            result = await allowed.post_json(f"http://localhost:{receiver.port}/h", b"{}", "k2")
            assert result.ok and result.status == 200
        finally:
            await allowed.close()
        assert [r.idempotency_key for r in receiver.requests] == ["k2"]
