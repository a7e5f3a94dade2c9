"""AlertService on a served platform against real PostgreSQL: definitions created,
listed, read, updated field by field and disabled; their events and deliveries paged; a
real delivery to a loopback receiver seen through ListAlertDeliveries; the webhook wall
at Create and Update; the auth matrix and org scoping of every RPC; webhook URLs never
returned."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest

from tests.api_matrix import Call, assert_bad_credentials_refused, assert_role_refused, refused
from tests.api_support import ApiUser, make_user
from tests.conftest import eventually
from tests.integration.conftest import fast_alert_settings
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.postgres import queries
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.alerts import AlertsClient, Page
from trace_platform.core.alert_definitions import channel_key
from trace_platform.core.config import Settings
from trace_platform.core.errors import AlreadyExists, InvalidArgument
from trace_platform.gen.trace.api.v1 import alerts_pb2 as pb
from trace_platform.gen.trace.api.v1 import alerts_pb2_grpc

SECRET_URL = "https://hooks.example.com/services/T000/s3cr3t-path?token=s3cr3t-query"
OTHER_URL = "https://alerts.example.org:8443/hook/another-s3cr3t"


@pytest.fixture
async def editor(platform: RunningPlatform, settings: Settings) -> ApiUser:
    return await make_user(platform.pool, settings, "editor")


@pytest.fixture
def client(channel: grpc.aio.Channel, editor: ApiUser) -> AlertsClient:
    return AlertsClient(channel, token=editor.token)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> alerts_pb2_grpc.AlertServiceStub:
    return alerts_pb2_grpc.AlertServiceStub(channel)


async def add_events(pool: asyncpg.Pool, org_id: str, alert_id: str, n: int, tag: str = "e") -> list[str]:
    """Alert events as the sink writes them, routed to the definition's channels."""
    ids = []
    for i in range(n):
        ids.append(
            str(
                await pool.fetchval(
                    """INSERT INTO alert_events (org_id, alert_definition_id, severity, chain_id, block_number,
                                                 tx_hash, dedupe_key, event_time, payload)
                       VALUES ($1, $2, 'critical', 31337, $3, $4, $5, now(), $6::jsonb) RETURNING id""",
                    uuid.UUID(org_id),
                    uuid.UUID(alert_id),
                    100 + i,
                    f"0x{i:064x}",
                    f"{tag}-{i}",
                    json.dumps({"i": i}),
                )
            )
        )
    await pool.execute(queries.load("alerts")["route_events"], [uuid.UUID(i) for i in ids])
    return ids


async def _definitions(db: asyncpg.Connection) -> list[asyncpg.Record]:
    sql = "SELECT name, channels::text AS channels, enabled, description FROM alert_definitions ORDER BY name"
    return list(await db.fetch(sql))


async def test_create_get_update_disable_and_urls_never_come_back(
    client: AlertsClient, stub: alerts_pb2_grpc.AlertServiceStub, editor: ApiUser
) -> None:
    created = await client.create("big-transfers", [SECRET_URL], description="ETH > 100", severity="critical")
    assert (created.name, created.description, created.severity, created.enabled) == (
        "big-transfers",
        "ETH > 100",
        "critical",
        True,
    )
    assert [(w.key, w.display) for w in created.webhooks] == [(channel_key(SECRET_URL), "https://hooks.example.com")]
    assert await client.get(created.alert_id) == created

    # Only the fields given change.
    described = await client.update(created.alert_id, description="ETH > 500")
    assert (described.description, described.webhooks, described.severity, described.enabled) == (
        "ETH > 500",
        created.webhooks,
        "critical",
        True,
    )
    rehooked = await client.update(created.alert_id, webhook_urls=[OTHER_URL, SECRET_URL, OTHER_URL])
    assert [w.display for w in rehooked.webhooks] == ["https://alerts.example.org:8443", "https://hooks.example.com"]
    assert rehooked.description == "ETH > 500"
    disabled = await client.disable(created.alert_id)
    assert not disabled.enabled and disabled.webhooks == rehooked.webhooks
    enabled = await client.update(created.alert_id, enabled=True, severity="info")
    assert enabled.enabled and enabled.severity == "info"
    with pytest.raises(AlreadyExists) as dup:
        await client.create("big-transfers", [SECRET_URL])
    assert dup.value.reason == "ALERT_DEFINITION_EXISTS"
    with pytest.raises(InvalidArgument) as bad:
        await client.update(created.alert_id, description="x" * 1025)
    assert bad.value.reason == "INVALID_DESCRIPTION"

    # No response of any read carries the URLs' secrets.
    md = editor.metadata
    responses = [
        await stub.GetAlert(pb.GetAlertRequest(alert_id=created.alert_id), metadata=md),
        await stub.ListAlerts(pb.ListAlertsRequest(), metadata=md),
        await stub.UpdateAlert(pb.UpdateAlertRequest(alert_id=created.alert_id), metadata=md),
    ]
    for resp in responses:
        wire = resp.SerializeToString()
        assert b"s3cr3t" not in wire and b"/services" not in wire


async def test_webhook_wall_at_create_and_update(client: AlertsClient, db: asyncpg.Connection) -> None:
    """The default platform: https only, no private or loopback address, hosts in their final form."""
    forbidden = [
        "http://hooks.example.com/plain",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "https://api.localhost/hook",
        "https://2130706433/hook",
        "https://0x7f.1/hook",
        "https://127.1/hook",
        "https://0177.0.0.1/hook",
        "https://127\u30020\u30020\u30021/hook",
        "https://evil@hooks.example.com/",
        "https://hooks.example.com./",
        "https://%68ooks.example.com/",
    ]
    for url in forbidden:
        with pytest.raises(InvalidArgument) as refused_create:
            await client.create("walled", [SECRET_URL, url])
        assert refused_create.value.reason == "DESTINATION_FORBIDDEN", url
        assert url not in refused_create.value.message
    with pytest.raises(InvalidArgument) as scheme:
        await client.create("walled", ["ftp://hooks.example.com/"])
    assert scheme.value.reason == "INVALID_WEBHOOK_SCHEME"
    assert await _definitions(db) == []

    alert = await client.create("walled", [SECRET_URL])
    before = await _definitions(db)
    for url in forbidden:
        with pytest.raises(InvalidArgument) as refused_update:
            await client.update(alert.alert_id, webhook_urls=[url], description="changed")
        assert refused_update.value.reason == "DESTINATION_FORBIDDEN", url
    assert await _definitions(db) == before  # nothing partly written


async def test_lists_page_in_three_stable_pages_without_duplicates(
    platform: RunningPlatform, client: AlertsClient, editor: ApiUser, settings: Settings
) -> None:
    alerts = [await client.create(f"a{i}", [SECRET_URL]) for i in range(7)]

    async def pages(fetch: Callable[[str], Awaitable[Page[Any]]]) -> list[list[Any]]:
        out: list[list[Any]] = []
        token = ""
        while True:
            page = await fetch(token)
            out.append(page.items)
            token = page.next_page_token
            if not token:
                return out

    got = await pages(lambda t: client.list(page_size=3, page_token=t))
    assert [len(p) for p in got] == [3, 3, 1]
    assert [a.alert_id for p in got for a in p] == [a.alert_id for a in alerts]

    events = await add_events(platform.pool, editor.org_id, alerts[0].alert_id, 8)
    await add_events(platform.pool, editor.org_id, alerts[1].alert_id, 2, tag="other")
    got_events = await pages(lambda t: client.events(alerts[0].alert_id, page_size=3, page_token=t))
    assert [len(p) for p in got_events] == [3, 3, 2]
    assert [e.event_id for p in got_events for e in p] == events
    first = got_events[0][0]
    assert (first.tx_hash, first.block_number, first.severity, json.loads(first.payload_json)) == (
        f"0x{0:064x}",
        100,
        "critical",
        {"i": 0},
    )

    got_deliveries = await pages(lambda t: client.deliveries(alert_id=alerts[0].alert_id, page_size=3, page_token=t))
    flat = [d for p in got_deliveries for d in p]
    assert [len(p) for p in got_deliveries] == [3, 3, 2]
    assert sorted(d.event_id for d in flat) == sorted(events) and len({d.delivery_id for d in flat}) == 8
    assert {d.webhook.display for d in flat} == {"https://hooks.example.com"}
    one = await client.deliveries(event_id=events[3])
    assert [d.event_id for d in one.items] == [events[3]]
    # Iterators walk every page.
    assert [a.alert_id async for a in client.iterate(page_size=2)] == [a.alert_id for a in alerts]
    assert len([e async for e in client.iterate_events(alerts[1].alert_id, page_size=1)]) == 2
    for token in ("garbage!", "e30", "eyJ0IjoiMjAyNiIsImlkIjoxfQ"):
        with pytest.raises(InvalidArgument) as bad:
            await client.list(page_token=token)
        assert bad.value.reason == "PAGE_TOKEN_INVALID"
    with pytest.raises(InvalidArgument):
        await client.deliveries()
    with pytest.raises(InvalidArgument):
        await client.deliveries(alert_id=alerts[0].alert_id, event_id=events[0])


async def test_auth_matrix_and_another_org_is_not_found(
    platform: RunningPlatform,
    stub: alerts_pb2_grpc.AlertServiceStub,
    client: AlertsClient,
    editor: ApiUser,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    alert = await client.create("mine", [SECRET_URL], description="before")
    [event] = await add_events(platform.pool, editor.org_id, alert.alert_id, 1)
    aid = alert.alert_id
    reads: dict[str, Call] = {
        "ListAlerts": lambda md: stub.ListAlerts(pb.ListAlertsRequest(), metadata=md),
        "GetAlert": lambda md: stub.GetAlert(pb.GetAlertRequest(alert_id=aid), metadata=md),
        "ListAlertEvents": lambda md: stub.ListAlertEvents(pb.ListAlertEventsRequest(alert_id=aid), metadata=md),
        "ListAlertDeliveries": lambda md: stub.ListAlertDeliveries(
            pb.ListAlertDeliveriesRequest(alert_id=aid), metadata=md
        ),
        "ListAlertDeliveries(event)": lambda md: stub.ListAlertDeliveries(
            pb.ListAlertDeliveriesRequest(event_id=event), metadata=md
        ),
    }
    writes: dict[str, Call] = {
        "CreateAlert": lambda md: stub.CreateAlert(
            pb.CreateAlertRequest(name="new", webhook_urls=[SECRET_URL]), metadata=md
        ),
        "UpdateAlert": lambda md: stub.UpdateAlert(
            pb.UpdateAlertRequest(alert_id=aid, description="after"), metadata=md
        ),
        "DisableAlert": lambda md: stub.DisableAlert(pb.DisableAlertRequest(alert_id=aid), metadata=md),
    }
    before = await _definitions(db)
    await assert_bad_credentials_refused(settings, editor, {**reads, **writes})
    viewer = await make_user(platform.pool, settings, "viewer", org_id=editor.org_id)
    await assert_role_refused(viewer, writes)
    for read in reads.values():
        await read(viewer.metadata)  # a viewer reads
    assert await _definitions(db) == before

    # Another org: every id of this org answers exactly as an id that does not exist.
    stranger = await make_user(platform.pool, settings, "admin")
    missing = str(uuid.uuid4())
    absent: dict[str, Call] = {
        "GetAlert": lambda md: stub.GetAlert(pb.GetAlertRequest(alert_id=missing), metadata=md),
        "ListAlertEvents": lambda md: stub.ListAlertEvents(pb.ListAlertEventsRequest(alert_id=missing), metadata=md),
        "ListAlertDeliveries": lambda md: stub.ListAlertDeliveries(
            pb.ListAlertDeliveriesRequest(alert_id=missing), metadata=md
        ),
        "ListAlertDeliveries(event)": lambda md: stub.ListAlertDeliveries(
            pb.ListAlertDeliveriesRequest(event_id=missing), metadata=md
        ),
        "UpdateAlert": lambda md: stub.UpdateAlert(
            pb.UpdateAlertRequest(alert_id=missing, description="after"), metadata=md
        ),
        "DisableAlert": lambda md: stub.DisableAlert(pb.DisableAlertRequest(alert_id=missing), metadata=md),
    }
    for rpc, call in absent.items():
        foreign = await refused(reads.get(rpc) or writes[rpc], stranger.metadata)
        assert foreign == await refused(call, stranger.metadata), rpc
        assert foreign[0] == grpc.StatusCode.NOT_FOUND, rpc
    assert list((await stub.ListAlerts(pb.ListAlertsRequest(), metadata=stranger.metadata)).alerts) == []
    # The same name in another org is another definition.
    theirs = await stub.CreateAlert(
        pb.CreateAlertRequest(name="mine", webhook_urls=[OTHER_URL]), metadata=stranger.metadata
    )
    assert theirs.alert.alert_id != aid
    assert (await client.get(aid)).description == "before" and (await client.get(aid)).enabled


@pytest.fixture
async def delivery_platform(settings: Settings) -> AsyncIterator[RunningPlatform]:
    running = await start_platform(fast_alert_settings(settings), migrate=False)
    yield running
    await running.stop(grace=0.5)


async def test_a_real_delivery_shows_status_attempts_and_response_code(
    delivery_platform: RunningPlatform, settings: Settings
) -> None:
    user = await make_user(delivery_platform.pool, settings, "editor")
    async with grpc.aio.insecure_channel(delivery_platform.addr) as ch:
        client = AlertsClient(ch, token=user.token)
        with webhook_receiver(fail_first=True) as receiver:
            url = receiver.url("/hook/s3cr3t")
            alert = await client.create("loopback", [url])
            assert alert.webhooks[0].display == f"http://127.0.0.1:{receiver.port}"
            [event] = await add_events(delivery_platform.pool, user.org_id, alert.alert_id, 1)

            async def delivered() -> object:
                page = await client.deliveries(event_id=event)
                return page.items if page.items and page.items[0].status == "delivered" else None

            [d] = await eventually(delivered, timeout=20)
            assert (d.attempts, d.last_response_code, d.alert_id, d.event_id) == (2, 200, alert.alert_id, event)
            assert d.delivered_at is not None and d.delivered_at <= datetime.now(UTC)
            assert d.webhook.key == channel_key(url) and "s3cr3t" not in d.webhook.display
            assert [r.status for r in receiver.requests] == [500, 200]
            assert receiver.requests[-1].path == "/hook/s3cr3t"
        by_alert = await client.deliveries(alert_id=alert.alert_id)
        assert [x.delivery_id for x in by_alert.items] == [d.delivery_id]
        # Disabled: new events of the alert are no longer routed to its webhooks.
        await client.disable(alert.alert_id)
        await add_events(delivery_platform.pool, user.org_id, alert.alert_id, 1, tag="late")
        assert len((await client.deliveries(alert_id=alert.alert_id)).items) == 1
        assert len((await client.events(alert.alert_id)).items) == 2


async def test_a_failing_webhook_shows_its_attempts_code_and_reason(
    delivery_platform: RunningPlatform, settings: Settings
) -> None:
    user = await make_user(delivery_platform.pool, settings, "editor")
    async with grpc.aio.insecure_channel(delivery_platform.addr) as ch:
        client = AlertsClient(ch, token=user.token)
        with webhook_receiver(always_status=503) as receiver:
            alert = await client.create("down", [receiver.url("/hook")])
            [event] = await add_events(delivery_platform.pool, user.org_id, alert.alert_id, 1)

            async def given_up() -> object:
                page = await client.deliveries(event_id=event)
                return page.items if page.items and page.items[0].status == "failed" else None

            [d] = await eventually(given_up, timeout=20)
        # fast_alert_settings: three attempts, then failed for good.
        assert (d.attempts, d.last_response_code, d.last_error, d.delivered_at) == (3, 503, "HTTP 503", None)
        assert d.last_attempt_at is not None and d.next_attempt_at is None
        assert len(receiver.requests) == 3
