"""Attack: webhook destinations that reach this machine or the metadata address through
a host spelling the HTTP client normalises after the check (issue 13, hole 3), and a
name that resolves to an allowed and a forbidden address at once (hole 10).

Every refusal here is proved on real sockets: a receiver (or a bare TCP listener) that
would record any contact stays untouched.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from tests.conftest import eventually
from tests.integration.conftest import ORG, claim_new
from tests.integration.test_sink_delivery import jsonl, publish, rows_for
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.webhook import DESTINATION_FORBIDDEN, DestinationPolicy, WebhookSender
from trace_platform.app import start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.alert_definitions import WebhookChannel
from trace_platform.core.config import Settings, settings_from_env
from trace_platform.core.errors import InvalidArgument

pytestmark = pytest.mark.integration

LOOPBACK = DestinationPolicy.parse(["127.0.0.0/8", "::1/128"])

# Spellings of 127.0.0.1 that an HTTP client or the C resolver turns into it. {p} is the port.
UNICODE_LOOPBACK = [
    "http://127\u30020\u30020\u30021:{p}/h",  # ideographic full stops
    "http://127\uff0e0\uff0e0\uff0e1:{p}/h",  # fullwidth full stops
    "http://\u2460\u2461\u2466.0.0.1:{p}/h",  # circled digits
    "http://\uff11\uff12\uff17.0.0.1:{p}/h",  # fullwidth digits
    "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:{p}/h",  # fullwidth "localhost"
]
NUMERIC_LOOPBACK = [
    "http://2130706433:{p}/h",  # decimal
    "http://0177.0.0.1:{p}/h",  # octal
    "http://0x7f.0.0.1:{p}/h",  # hex
    "http://0x7f000001:{p}/h",
    "http://127.1:{p}/h",  # short forms
    "http://127.0.1:{p}/h",
    "http://127.0.0.1.:{p}/h",  # trailing dot
    "http://127.000.000.001:{p}/h",  # leading zeros
]
AUTHORITY_TRICKS = [
    "http://evil.example.com@127.0.0.1:{p}/h",  # userinfo: the host is 127.0.0.1
    "http://user:pass@127.0.0.1:{p}/h",
    "http://[::ffff:127.0.0.1]:{p}/h",  # IPv6 forms of loopback
    "http://[::ffff:7f00:1]:{p}/h",
    "http://[::1]:{p}/h",
    "http://[::127.0.0.1]:{p}/h",  # IPv4-compatible
    "http://[fe80::1%25lo]:{p}/h",  # zone id
    "http://127%2e0%2e0%2e1:{p}/h",  # percent-escapes in the host
]
METADATA_AND_PRIVATE = [
    "http://169\u3002254\u3002169\u3002254:{p}/latest/meta-data/",
    "http://\u2460\u2466\u2461.16.0.1:{p}/h",  # 172.16.0.1, circled
    "http://\uff11\uff10.0.0.1:{p}/h",  # 10.0.0.1, fullwidth
    "http://2852039166:{p}/h",  # 169.254.169.254, decimal
    "http://[2002:a9fe:a9fe::1]:{p}/h",  # 6to4 of 169.254.169.254
]
ALL_TRICKS = UNICODE_LOOPBACK + NUMERIC_LOOPBACK + AUTHORITY_TRICKS + METADATA_AND_PRIVATE


@asynccontextmanager
async def sender(policy: DestinationPolicy, **kwargs: Any) -> AsyncIterator[WebhookSender]:
    s = WebhookSender(2.0, 1024, policy, **kwargs)
    try:
        yield s
    finally:
        await s.close()


def refused(result: Any) -> bool:
    return (result.ok, result.error, result.permanent) == (False, DESTINATION_FORBIDDEN, True)


@pytest.mark.parametrize("template", ALL_TRICKS)
async def test_a_host_that_normalises_to_a_forbidden_address_is_never_contacted(template: str) -> None:
    with webhook_receiver() as receiver:
        async with sender(DestinationPolicy(), allow_http=True) as s:
            result = await s.post_json(template.format(p=receiver.port), b"{}", "k")
        assert refused(result), template
        assert receiver.requests == []


@pytest.mark.parametrize("template", UNICODE_LOOPBACK + NUMERIC_LOOPBACK + AUTHORITY_TRICKS[:2])
async def test_a_non_canonical_host_is_refused_even_where_its_address_is_allowed(template: str) -> None:
    """The operator allowed loopback: 127.0.0.1 itself is delivered to, but no spelling
    of it that the check and the client would read differently."""
    with webhook_receiver() as receiver:
        async with sender(LOOPBACK, allow_http=True) as s:
            result = await s.post_json(template.format(p=receiver.port), b"{}", "k")
            assert refused(result), template
            assert receiver.requests == []
            plain = await s.post_json(receiver.url("/h"), b"{}", "k2")
        assert plain.ok and [r.idempotency_key for r in receiver.requests] == ["k2"]


async def test_https_is_required_unless_http_is_allowed() -> None:
    assert settings_from_env({}).delivery.allow_http is False
    assert settings_from_env({"TRACE_WEBHOOK_ALLOW_HTTP": "1"}).delivery.allow_http is True
    with webhook_receiver() as receiver:
        async with sender(LOOPBACK) as s:
            assert refused(await s.post_json(receiver.url("/h"), b"{}", "k"))
        assert receiver.requests == []
        async with sender(LOOPBACK, allow_http=True) as s:
            assert (await s.post_json(receiver.url("/h"), b"{}", "k")).ok


async def test_redirects_are_not_followed() -> None:
    with webhook_receiver() as target:

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target.url("/stolen"))

        app = web.Application()
        app.router.add_post("/h", redirect)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with sender(LOOPBACK, allow_http=True) as s:
                result = await s.post_json(f"http://127.0.0.1:{port}/h", b"{}", "k")
        finally:
            await runner.cleanup()
        assert (result.ok, result.status) == (False, 307)
        assert target.requests == []


class FixedAnswerResolver(AbstractResolver):
    """A real aiohttp resolver (the sender's name service) whose answers the test
    chooses: ``answers`` maps a name to the (address, port) pairs it resolves to. It
    stands in for a DNS record with several A records; nothing else is replaced."""

    def __init__(self, answers: dict[str, list[tuple[str, int]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(hostname=host, host=a, port=p, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)
            for a, p in self.answers.get(host, [])
        ]

    async def close(self) -> None:
        pass


@contextmanager
def tcp_listener(address: str) -> Iterator[tuple[int, list[object]]]:
    """A bare listening socket that records every connection made to it."""
    accepted: list[object] = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((address, 0))
    sock.listen(8)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    def on_readable() -> None:
        try:
            conn, peer = sock.accept()
        except BlockingIOError:
            return
        accepted.append(peer)
        conn.close()

    loop.add_reader(sock.fileno(), on_readable)
    try:
        yield sock.getsockname()[1], accepted
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()


async def test_a_name_resolving_to_an_allowed_and_a_forbidden_address_is_refused_whole() -> None:
    """127.0.0.1 is allowed, 127.0.0.2 is not (both are this machine's loopback, so both
    are real, listening destinations). A name with both answers is refused, and neither
    address is contacted; the same name with only the allowed answer is delivered."""
    policy = DestinationPolicy.parse(["127.0.0.1/32"])
    with webhook_receiver() as allowed, tcp_listener("127.0.0.2") as (forbidden_port, forbidden_hits):
        resolver = FixedAnswerResolver(
            {
                "mixed.hooks.test": [("127.0.0.1", allowed.port), ("127.0.0.2", forbidden_port)],
                "forbidden-first.hooks.test": [("127.0.0.2", forbidden_port), ("127.0.0.1", allowed.port)],
                "clean.hooks.test": [("127.0.0.1", allowed.port)],
            }
        )
        async with sender(policy, allow_http=True, resolver=resolver) as s:
            for name in ("mixed.hooks.test", "forbidden-first.hooks.test"):
                assert refused(await s.post_json(f"http://{name}:{allowed.port}/h", b"{}", "k")), name
            await asyncio.sleep(0.1)  # a connection attempt, had one been made, would be accepted by now
            assert forbidden_hits == [] and allowed.requests == []
            clean = await s.post_json(f"http://clean.hooks.test:{allowed.port}/h", b"{}", "k2")
        assert clean.ok and [r.idempotency_key for r in allowed.requests] == ["k2"]
        assert resolver.asked == ["mixed.hooks.test", "forbidden-first.hooks.test", "clean.hooks.test"]
        assert forbidden_hits == []


# Canonical IPv6 literals ([::1], [::ffff:7f00:1], 6to4) are well-formed: whether they may
# be contacted is the sender's policy (allowed_networks), tested above.
NOT_IN_FINAL_FORM = [t for t in ALL_TRICKS if "[" not in t or "%" in t]


@pytest.mark.parametrize("template", NOT_IN_FINAL_FORM)
async def test_definition_creation_refuses_a_non_canonical_host_and_writes_nothing(
    template: str, db: asyncpg.Connection, settings: Settings
) -> None:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(InvalidArgument) as exc:
            await AlertRepository(pool).create_definition(ORG, "ssrf", [template.format(p=8080)])
    finally:
        await pool.close()
    assert exc.value.reason == DESTINATION_FORBIDDEN, template
    assert await db.fetchval("SELECT count(*) FROM alert_definitions") == 0


async def test_definition_creation_accepts_plain_names_and_canonical_literals(
    db: asyncpg.Connection, settings: Settings
) -> None:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        repo = AlertRepository(pool)
        for i, url in enumerate(
            [
                "https://hooks.example.com/x?token=abc",
                "https://xn--e1afmkfd.xn--p1ai/hook",  # an IDN, written in its final (xn--) form
                "https://HOOKS.Example.COM:8443/x",
                "https://8.8.8.8/x",
                "https://[2606:4700::1111]/x",
            ]
        ):
            await repo.create_definition(ORG, f"ok{i}", [url])
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM alert_definitions") == 5


async def test_a_stored_unicode_destination_fails_at_once_in_the_delivery_service(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A definition stored before creation checked hosts (inserted here past the
    validation) is refused by the running Delivery Service on its first attempt."""
    strict = replace(
        settings, delivery=replace(settings.delivery, allowed_networks=(), allow_http=True, interval_seconds=0.05)
    )
    running = await start_platform(strict, migrate=False)
    try:
        with webhook_receiver() as receiver:
            urls = [t.format(p=receiver.port) for t in (UNICODE_LOOPBACK[0], NUMERIC_LOOPBACK[0], AUTHORITY_TRICKS[0])]
            channels = json.dumps([WebhookChannel(u).as_json() for u in urls])
            definition = str(
                await db.fetchval(
                    "INSERT INTO alert_definitions (org_id, name, channels, enabled)"
                    " VALUES ($1, 'legacy', $2::jsonb, true) RETURNING id",
                    ORG,
                    channels,
                )
            )
            await _publish_one_alert(running.addr, strict, definition)

            async def all_failed() -> Any:
                rows = await db.fetch("SELECT * FROM alert_deliveries WHERE status = 'failed'")
                return rows if len(rows) == len(urls) else None

            rows = await eventually(all_failed)
            assert {(r["attempt"], r["error_message"]) for r in rows} == {(1, DESTINATION_FORBIDDEN)}
            assert receiver.requests == []
    finally:
        await running.stop(grace=0.5)


async def _publish_one_alert(addr: str, settings: Settings, definition: str) -> None:
    async with grpc.aio.insecure_channel(addr) as ch:
        client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_new(client)
        await publish(client, ref, cap, jsonl(rows_for(definition, 1, prefix=uuid.uuid4().hex[:6])))
