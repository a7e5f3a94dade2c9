"""Buffer publish -> sink -> alert_events -> routing -> Delivery Service -> webhook,
against real servers, PostgreSQL and an HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import grpc
import jwt
import pytest

from tests.conftest import eventually
from tests.integration.conftest import ORG, claim_new, fast_alert_settings
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.sink import SinkClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2

pytestmark = pytest.mark.integration
OTHER_ORG = "00000000-0000-0000-0000-0000000000bb"
HASH = "0x" + "cd" * 32


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_alert_settings(settings)


@pytest.fixture
def dclient(channel: grpc.aio.Channel, settings: Settings) -> DispatcherClient:
    return DispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)


@pytest.fixture
def sink_client(channel: grpc.aio.Channel, settings: Settings) -> SinkClient:
    assert settings.admin_token
    return SinkClient(channel, admin_token=settings.admin_token)


def rows_for(definition_id: str | None, n: int, prefix: str = "ev") -> list[dict[str, Any]]:
    return [
        {
            "dedupe_key": f"{definition_id}:{prefix}:{i}",
            "event_time": f"2026-01-02T03:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "alert_definition_id": definition_id,
            "severity": "critical",
            "chain_id": 1,
            "block_number": 100 + i,
            "block_hash": HASH,
            "tx_hash": HASH,
            "payload": {"amount": str(i * 1000)},
        }
        for i in range(n)
    ]


def jsonl(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def write_prefix(capability: str) -> str:
    """The write prefix the Dispatcher granted this attempt (Lite: a file:// scratch prefix)."""
    claims = jwt.decode(capability, options={"verify_signature": False})
    prefixes: list[str] = claims["s3"]["write_prefixes"]
    assert len(prefixes) == 1 and prefixes[0].startswith("file://")
    return prefixes[0]


def artifact_path(uri: str) -> Path:
    return Path(urlsplit(uri).path)


async def publish(
    client: DispatcherClient, ref: TaskRef, cap: str, data: bytes, name: str = "alerts.jsonl"
) -> tuple[str, str, bool]:
    uri = write_prefix(cap) + name
    path = artifact_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    resp = await client.buffer_publish(ref, cap, uri, len(data))
    return resp.publish_id, uri, resp.duplicate


async def publish_status(db: asyncpg.Connection, publish_id: str) -> str:
    return str(await db.fetchval("SELECT status FROM buffered_publishes WHERE id = $1", uuid.UUID(publish_id)))


async def settled(db: asyncpg.Connection, *publish_ids: str) -> bool:
    statuses = [await publish_status(db, p) for p in publish_ids]
    return all(s != "pending" for s in statuses)


async def test_batch_lands_once_and_is_delivered_once_per_event_and_channel_despite_failures_and_duplicates(
    platform: RunningPlatform, dclient: DispatcherClient, db: asyncpg.Connection
) -> None:
    repo = AlertRepository(platform.pool)
    with webhook_receiver(fail_first=True) as receiver:
        definition = await repo.create_definition(ORG, "whales", [receiver.url("/a"), receiver.url("/b?token=s3cret")])
        rows = rows_for(definition, 3)
        ref, cap = await claim_new(dclient)
        first, uri, dup = await publish(dclient, ref, cap, jsonl(rows))
        assert not dup
        # (b) the same publish again (one record, one more wake-up at most) and the same
        # rows under another artifact of the same attempt (a second publish record).
        again, _, dup = await publish(dclient, ref, cap, jsonl(rows))
        assert (again, dup) == (first, True)
        second, _, _ = await publish(dclient, ref, cap, jsonl(list(reversed(rows))), name="again.jsonl")
        # (c) the attempt fails and the Dispatcher retries the task; attempt 2 publishes
        # the same dedupe keys under its own write prefix.
        await dclient.complete(ref, cap, dispatcher_pb2.COMPLETION_STATUS_FAILED, error_message="boom")

        async def reclaim() -> Any:
            resp = await dclient.claim(ref.task_id, "w-retry")
            return resp if resp.WhichOneof("result") == "claimed" else None

        claimed = (await eventually(reclaim)).claimed
        ref2 = TaskRef(ref.task_id, claimed.attempt, claimed.lease_token)
        assert ref2.attempt == 2
        third, uri3, _ = await publish(dclient, ref2, claimed.capability_token, jsonl(rows))
        assert uri3 != uri
        await dclient.complete(ref2, claimed.capability_token)

        async def all_delivered() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n == 6)

        await eventually(lambda: settled(db, first, second, third))
        await eventually(all_delivered, timeout=15)
        assert {await publish_status(db, p) for p in (first, second, third)} == {"applied"}
        events = await db.fetch("SELECT org_id, producer_task_id, dedupe_key, payload::text AS p FROM alert_events")
        assert sorted(e["dedupe_key"] for e in events) == sorted(r["dedupe_key"] for r in rows)
        assert {str(e["org_id"]) for e in events} == {ORG}
        assert {str(e["producer_task_id"]) for e in events} == {ref.task_id}

        # (a) a redelivered wake-up for an applied publish changes nothing.
        await platform.queue.publish("buffers", [{"publish_id": first}])
        await eventually(lambda: _queue_empty(db))

        deliveries = await db.fetch("SELECT id, status, attempt, response_code FROM alert_deliveries")
        assert len(deliveries) == 6
        assert all(d["attempt"] == 2 and d["response_code"] == 200 for d in deliveries)
        delivered = receiver.delivered()
        keys = Counter(r.idempotency_key for r in delivered)
        assert set(keys) == {str(d["id"]) for d in deliveries}
        assert set(keys.values()) == {1}  # exactly one successful send per event and channel
        assert len(receiver.requests) == 12  # each failed once first (500), then succeeded
        assert Counter(r.path for r in delivered) == {"/a": 3, "/b?token=s3cret": 3}
        for r in delivered:
            assert r.body["delivery_id"] == r.idempotency_key
            assert r.body["org_id"] == ORG and r.body["alert_definition_id"] == definition
            assert "url" not in r.body


async def _queue_empty(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM queue_messages WHERE queue = 'buffers'") == 0)


async def test_malformed_batch_is_dead_lettered_whole_and_replays_after_fix(
    platform: RunningPlatform, dclient: DispatcherClient, sink_client: SinkClient, db: asyncpg.Connection
) -> None:
    with webhook_receiver() as receiver:
        definition = await AlertRepository(platform.pool).create_definition(ORG, "d", [receiver.url("/hook")])
        rows: list[Any] = rows_for(definition, 4)
        bad = [*rows[:2], {**rows[2], "unexpected": True}, rows[3]]
        ref, cap = await claim_new(dclient)
        publish_id, uri, _ = await publish(dclient, ref, cap, jsonl(bad))
        await eventually(lambda: settled(db, publish_id))
        assert await publish_status(db, publish_id) == "dead_lettered"
        assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
        assert await db.fetchval("SELECT count(*) FROM alert_deliveries") == 0
        listed = (await sink_client.list_dead_letters()).dead_letters
        assert len(listed) == 1
        dl = listed[0]
        assert (dl.publish_id, dl.batch_uri, dl.reason, dl.row_number) == (publish_id, uri, "UNKNOWN_FIELD", 3)
        assert (dl.org_id, dl.task_id) == (ORG, ref.task_id)
        assert not dl.HasField("replayed_at")

        # Replaying the unchanged artifact is refused and writes nothing.
        with pytest.raises(FailedPrecondition) as still:
            await sink_client.replay(dl.dead_letter_id)
        assert still.value.reason == "BATCH_STILL_INVALID"
        assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
        assert await publish_status(db, publish_id) == "dead_lettered"

        artifact_path(uri).write_bytes(jsonl(rows))  # the operator fixes the artifact in place
        replayed = await sink_client.replay(dl.dead_letter_id)
        assert (replayed.rows_upserted, replayed.rows_in_batch) == (4, 4)
        assert await publish_status(db, publish_id) == "applied"
        with pytest.raises(FailedPrecondition) as twice:
            await sink_client.replay(dl.dead_letter_id)
        assert twice.value.reason == "ALREADY_REPLAYED"
        assert (await sink_client.list_dead_letters()).dead_letters[0].HasField("replayed_at")
        await eventually(lambda: _delivered_count(db, 4))
        assert len(receiver.delivered()) == 4


async def _delivered_count(db: asyncpg.Connection, n: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'") == n)


async def test_forged_attribution_and_foreign_definitions_are_refused(
    platform: RunningPlatform, dclient: DispatcherClient, sink_client: SinkClient, db: asyncpg.Connection
) -> None:
    repo = AlertRepository(platform.pool)
    ours = await repo.create_definition(ORG, "ours", ["https://hooks.example.com/x"])
    theirs = await repo.create_definition(OTHER_ORG, "theirs", ["https://hooks.example.com/y"])
    ref, cap = await claim_new(dclient)
    forged = [*rows_for(ours, 2), {**rows_for(ours, 3)[2], "org_id": OTHER_ORG}]
    p1, _, _ = await publish(dclient, ref, cap, jsonl(forged), name="forged.jsonl")
    foreign = [*rows_for(ours, 1, "f"), *rows_for(theirs, 1, "g")]
    p2, _, _ = await publish(dclient, ref, cap, jsonl(foreign), name="foreign.jsonl")
    await eventually(lambda: settled(db, p1, p2))
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
    page1 = await sink_client.list_dead_letters(page_size=1)
    assert len(page1.dead_letters) == 1 and page1.next_page_token
    page2 = await sink_client.list_dead_letters(page_size=1, page_token=page1.next_page_token)
    assert len(page2.dead_letters) == 1 and not page2.next_page_token
    got = {d.publish_id: (d.reason, d.row_number) for d in [*page1.dead_letters, *page2.dead_letters]}
    assert got == {p1: ("FORBIDDEN_FIELD", 3), p2: ("UNKNOWN_ALERT_DEFINITION", 2)}
    with pytest.raises(InvalidArgument):
        await sink_client.list_dead_letters(page_token="nope")


class FlakyStores(ObjectStores):
    """Real local stores that can be switched to 'unreachable'."""

    down = True

    def for_uri(self, uri: str) -> Any:
        if self.down:
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store unreachable")
        return super().for_uri(uri)


@pytest.fixture
async def flaky_platform(settings: Settings) -> AsyncIterator[tuple[RunningPlatform, FlakyStores]]:
    scratch = Path(urlsplit(settings.scratch_uri or "").path)
    stores = FlakyStores([LocalObjectStore([scratch])])
    running = await start_platform(settings, migrate=False, sink_stores=stores)
    yield running, stores
    await running.stop(grace=0.5)


async def test_transient_store_failure_retries_and_never_dead_letters(
    flaky_platform: tuple[RunningPlatform, FlakyStores], settings: Settings, db: asyncpg.Connection
) -> None:
    platform, stores = flaky_platform
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_new(client)
        publish_id, _, _ = await publish(client, ref, cap, jsonl(rows_for(None, 5)))

        async def retried() -> bool:
            n = await db.fetchval("SELECT max(receive_count) FROM queue_messages WHERE queue = 'buffers'")
            return bool(n is not None and n >= 3)

        await eventually(retried)
        assert await publish_status(db, publish_id) == "pending"
        assert await db.fetchval("SELECT count(*) FROM sink_dead_letters") == 0
        assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
        stores.down = False
        await eventually(lambda: settled(db, publish_id))
        assert await publish_status(db, publish_id) == "applied"
        assert await db.fetchval("SELECT count(*) FROM alert_events") == 5
        assert await db.fetchval("SELECT count(*) FROM alert_deliveries") == 0  # no definition, no routing
        await eventually(lambda: _queue_empty(db))


async def test_delivery_gives_up_after_max_attempts_and_records_the_outcome(
    platform: RunningPlatform, dclient: DispatcherClient, db: asyncpg.Connection
) -> None:
    with webhook_receiver(always_status=503) as receiver:
        definition = await AlertRepository(platform.pool).create_definition(ORG, "down", [receiver.url("/h")])
        ref, cap = await claim_new(dclient)
        await publish(dclient, ref, cap, jsonl(rows_for(definition, 1)))

        async def failed() -> Any:
            return await db.fetchrow("SELECT * FROM alert_deliveries WHERE status = 'failed'")

        row = await eventually(failed)
        assert (row["attempt"], row["response_code"], row["error_message"]) == (3, 503, "HTTP 503")
        assert row["delivered_at"] is None
        assert [r.idempotency_key for r in receiver.requests] == [str(row["id"])] * 3


async def test_a_forbidden_destination_fails_at_once_and_is_never_contacted(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """Deny by default: without loopback among the allowed networks, a webhook on this
    machine is refused before any connection, once, for good. Only this strict platform
    runs (no other fixture's platform may lease the deliveries)."""
    strict = replace(settings, delivery=replace(settings.delivery, allowed_networks=()))
    running = await start_platform(strict, migrate=False)
    try:
        with webhook_receiver() as receiver:
            repo = AlertRepository(running.pool)
            definition = await repo.create_definition(
                ORG, "ssrf", [receiver.url("/h"), f"http://localhost:{receiver.port}/h"]
            )
            async with grpc.aio.insecure_channel(running.addr) as ch:
                client = DispatcherClient(ch, worker_token=strict.worker_token, admin_token=strict.admin_token)
                ref, cap = await claim_new(client)
                await publish(client, ref, cap, jsonl(rows_for(definition, 1)))

            async def both_failed() -> Any:
                rows = await db.fetch("SELECT * FROM alert_deliveries WHERE status = 'failed'")
                return rows if len(rows) == 2 else None

            rows = await eventually(both_failed)
            assert {(r["attempt"], r["error_message"]) for r in rows} == {(1, "DESTINATION_FORBIDDEN")}
            assert receiver.requests == []
    finally:
        await running.stop(grace=0.5)


async def test_webhook_urls_are_validated_at_definition_creation(platform: RunningPlatform) -> None:
    repo = AlertRepository(platform.pool)
    for url, reason in [
        ("ftp://example.com/x", "INVALID_WEBHOOK_SCHEME"),
        ("file:///etc/passwd", "INVALID_WEBHOOK_SCHEME"),
        ("javascript:alert(1)", "INVALID_WEBHOOK_SCHEME"),
        ("https://", "INVALID_WEBHOOK_URL"),
        ("https://exa mple.com/", "INVALID_WEBHOOK_URL"),
        ("https://example.com:99999/", "INVALID_WEBHOOK_URL"),
        ("", "INVALID_WEBHOOK_URL"),
    ]:
        with pytest.raises(InvalidArgument) as exc:
            await repo.create_definition(ORG, f"d{uuid.uuid4().hex[:6]}", [url])
        assert exc.value.reason == reason, url
    same = await repo.create_definition(ORG, "dupes", ["https://a.example/x", "https://a.example/x"])
    channels = json.loads(
        await platform.pool.fetchval("SELECT channels::text FROM alert_definitions WHERE id = $1", uuid.UUID(same))
    )
    assert len(channels) == 1 and channels[0]["key"].startswith("webhook:")


async def test_concurrent_batches_sharing_keys_do_not_deadlock(database_url: str, db: asyncpg.Connection) -> None:
    """Two batches with the same keys in opposite orders, applied at the same time."""
    from trace_platform.adapters.postgres.alert_repository import PublishRecord
    from trace_platform.adapters.postgres.pool import create_pool
    from trace_platform.core.alert_rows import parse_batch

    task_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO tasks (id, org_id, operator, status, max_attempts) VALUES ($1, $2, 'x', 'running', 1)",
        task_id,
        ORG,
    )
    rows = parse_batch(jsonl(rows_for(None, 300)), 1000)
    pool = await create_pool(database_url, 2, 4)
    try:
        repo = AlertRepository(pool)
        for round_ in range(5):
            publishes = []
            for name in ("a", "b"):
                pid = await db.fetchval(
                    "INSERT INTO buffered_publishes (task_id, attempt, org_id, batch_uri, content_type,"
                    " batch_size_bytes, dedupe_scope) VALUES ($1, 1, $2, $3, 'application/jsonl', 1, 's')"
                    " RETURNING id",
                    task_id,
                    ORG,
                    f"file:///x/{round_}/{name}",
                )
                publishes.append(PublishRecord(str(pid), str(task_id), 1, ORG, "file:///x", "pending"))
            await db.execute("DELETE FROM alert_events")
            created = await asyncio.gather(
                repo.apply_batch(publishes[0], rows, "pending"),
                repo.apply_batch(publishes[1], list(reversed(rows)), "pending"),
            )
            assert sorted(created) == [0, 300]  # type: ignore[type-var]
    finally:
        await pool.close()
