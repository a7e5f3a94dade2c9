"""`trace datasets`, `trace alerts` and `trace dlq` run as a user runs them (the real
`trace` command in a subprocess) against a served platform and real PostgreSQL: JSON and
human output, reason codes on failure, no webhook URL ever printed back."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.api_support import ApiUser, make_user
from tests.conftest import eventually
from tests.datasets import FIXTURE_ROWS, write_dataset
from tests.integration.conftest import claim_new, fast_alert_settings
from tests.integration.test_api_alerts import add_events
from tests.integration.test_api_datasets import sync_yaml
from tests.integration.test_sink_delivery import artifact_path, jsonl, publish, rows_for, settled
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.config import Settings

SECRET = "s3cr3t-in-the-path"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_alert_settings(settings)


@pytest.fixture
async def user(platform: RunningPlatform, settings: Settings) -> ApiUser:
    return await make_user(platform.pool, settings, "editor")


def cli_env(platform: RunningPlatform, settings: Settings, user: ApiUser, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_ADDR=platform.addr,
        TRACE_USER_TOKEN=user.token,
        TRACE_ADMIN_TOKEN=settings.admin_token or "",
        TRACE_DATA_DIR=str(tmp_path / "no-lite-here"),
    )
    return env


class Trace:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    async def __call__(self, *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # In a thread: the platform serving these calls runs on this test's event loop.
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "trace_platform", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
        )
        if ok:
            assert done.returncode == 0, (args, done.stderr)
        else:
            assert done.returncode != 0, (args, done.stdout)
        assert SECRET not in done.stdout and SECRET not in done.stderr
        return done

    async def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads((await self(*args, "--json", stdin=stdin)).stdout)


@pytest.fixture
def trace(platform: RunningPlatform, settings: Settings, user: ApiUser, tmp_path: Path) -> Trace:
    return Trace(cli_env(platform, settings, user, tmp_path))


async def test_trace_datasets_list_get_publish(
    trace: Trace, platform: RunningPlatform, user: ApiUser, local_store: LocalObjectStore, objects_uri: str
) -> None:
    ds = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(platform.pool).publish(user.org_id, "fixture", ds.publication, ["email"])
    await ChainSyncRepository(platform.pool).apply(user.org_id, parse_chain_sync(sync_yaml("mainnet")))

    listed = await trace.json("datasets", "list", "--page-size", "1")
    # Oldest first; the two streams of one apply share a creation time, then go by id.
    assert listed[0]["name"] == "fixture"
    assert sorted(d["name"] for d in listed) == ["fixture", "mainnet.blocks", "mainnet.logs"]
    got = await trace.json("datasets", "get", "fixture")
    assert got["current_version"] == ds.dataset_version
    assert [(c["name"], c["type"], c["pii"]) for c in got["columns"]][-1] == ("email", "string", True)
    human = (await trace("datasets", "get", "fixture")).stdout
    assert "email  string  [pii]" in human and ds.dataset_version in human

    published = await trace.json("datasets", "publish", "eth_blocks", "--chain-sync", "mainnet.blocks")
    assert published["created"] is True and published["dataset"]["published_names"] == ["eth_blocks"]
    again = (await trace("datasets", "publish", "eth_blocks", "--chain-sync", "mainnet.blocks")).stdout
    assert "already published" in again
    taken = await trace("datasets", "publish", "eth_blocks", "--chain-sync", "mainnet.logs", ok=False)
    assert taken.stderr.count("DATASET_NAME_TAKEN") == 1 and taken.stderr.startswith("error: ")
    missing = await trace("datasets", "get", "nosuch", ok=False)
    assert "DATASET_NOT_FOUND" in missing.stderr and "hint: `trace datasets list`" in missing.stderr
    usage = await trace("datasets", "publish", "x", ok=False)
    assert usage.returncode == 2


async def test_trace_alerts_every_command_and_a_real_delivery(
    trace: Trace, platform: RunningPlatform, user: ApiUser
) -> None:
    with webhook_receiver() as receiver:
        url = receiver.url(f"/hook/{SECRET}")
        created = await trace.json(
            "alerts", "create", "big", "--webhooks-from", "-", "--severity", "critical", stdin=url + "\n"
        )
        alert_id = created["alert_id"]
        assert created["webhooks"][0]["display"] == f"http://127.0.0.1:{receiver.port}"
        assert [a["alert_id"] for a in await trace.json("alerts", "list")] == [alert_id]
        assert (await trace.json("alerts", "get", alert_id))["severity"] == "critical"
        updated = await trace.json("alerts", "update", alert_id, "--description", "ETH > 100")
        assert updated["description"] == "ETH > 100" and updated["webhooks"] == created["webhooks"]
        human = (await trace("alerts", "get", alert_id)).stdout
        assert "ETH > 100" in human and f"http://127.0.0.1:{receiver.port}" in human

        [event] = await add_events(platform.pool, user.org_id, alert_id, 1)

        async def delivered() -> Any:
            rows = await trace.json("alerts", "deliveries", alert_id)
            return rows if rows and rows[0]["status"] == "delivered" else None

        [d] = await eventually(delivered, timeout=30, interval=0.3)
        assert (d["event_id"], d["attempts"], d["last_response_code"]) == (event, 1, 200)
        assert d["delivered_at"]
        assert [r.path for r in receiver.delivered()] == [f"/hook/{SECRET}"]
        by_event = await trace.json("alerts", "deliveries", "--event", event)
        assert [x["delivery_id"] for x in by_event] == [d["delivery_id"]]
        line = (await trace("alerts", "deliveries", alert_id)).stdout
        assert "delivered  attempts=1  last_code=200" in line
        events = await trace.json("alerts", "events", alert_id)
        assert [e["event_id"] for e in events] == [event] and events[0]["tx_hash"] == f"0x{0:064x}"

    disabled = await trace.json("alerts", "disable", alert_id)
    assert disabled["enabled"] is False
    walled = await trace("alerts", "create", "bad", "--webhook", f"https://10.0.0.1/{SECRET}", ok=False)
    assert walled.stderr.count("DESTINATION_FORBIDDEN") == 1 and "hint: webhooks must be https" in walled.stderr
    unknown = await trace("alerts", "get", str(uuid.uuid4()), ok=False)
    assert "ALERT_NOT_FOUND" in unknown.stderr
    nothing = await trace("alerts", "update", alert_id, ok=False)
    assert nothing.returncode == 2


async def test_trace_dlq_list_and_replay(
    trace: Trace, platform: RunningPlatform, channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    assert await trace.json("dlq", "list") == []
    dclient = DispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)
    from tests.integration.conftest import ORG

    definition = await AlertRepository(platform.pool).create_definition(ORG, "d", ["https://hooks.example.com/x"])
    rows: list[Any] = rows_for(definition, 3)
    ref, cap = await claim_new(dclient)
    publish_id, uri, _ = await publish(dclient, ref, cap, jsonl([*rows[:1], {**rows[1], "unexpected": 1}, rows[2]]))
    await eventually(lambda: settled(db, publish_id))

    [dl] = await trace.json("dlq", "list")
    assert (dl["reason"], dl["row_number"], dl["task_id"]) == ("UNKNOWN_FIELD", 2, ref.task_id)
    still = await trace("dlq", "replay", dl["dead_letter_id"], ok=False)
    assert "BATCH_STILL_INVALID" in still.stderr
    artifact_path(uri).write_bytes(jsonl(rows))
    assert "replayed, 3 new events of 3 rows" in (await trace("dlq", "replay", dl["dead_letter_id"])).stdout
    [after] = await trace.json("dlq", "list")
    assert after["replayed_at"]
    missing = await trace("dlq", "replay", str(uuid.uuid4()), ok=False)
    assert "DEAD_LETTER_NOT_FOUND" in missing.stderr
