"""alert_evaluate end to end up to the Sink's input: TaskQuery over a granted Parquet
dataset, a sandboxed UDF (Python, Node, cargo-built Rust) that turns rows into alert
rows, the batch artifact under the attempt's write prefix, and a fenced BufferPublish."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.alert_udfs import NODE_ALERTS, PYTHON_ALERTS, RUST_ALERTS
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.datasets import FixtureDataset, write_dataset
from tests.integration.conftest import ORG, closed_audit_rows
from tests.udf_fixtures import build_rust_bootstrap, shared_tmp_dir
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.invoker.base import Invocation
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2

TRANSFERS = {
    "block_number": list(range(100, 110)),
    "value": [5, 1500, 7, 2000, 999, 1000, 3, 4, 1, 2],
}
EXPECTED_KEYS = {"large-transfer-101", "large-transfer-103", "large-transfer-105"}


@pytest.fixture(scope="module")
def rust_alerts() -> Iterator[Callable[[], bytes]]:
    """Built on first use, so the Python and Node cases run (and the Rust one skips) without cargo."""
    yield functools.cache(lambda: build_rust_bootstrap(shared_tmp_dir("trace-rust-alerts-"), RUST_ALERTS).read_bytes())


@pytest.fixture
def signing_key(settings: Settings) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    keys = settings.data_dir / "bundle_keys"
    keys.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (keys / "test.pub").write_bytes(pem)
    return key


@pytest.fixture
async def alerting(settings: Settings, signing_key: Ed25519PrivateKey) -> AsyncIterator[RunningPlatform]:
    fast = replace(
        settings,
        invoker=replace(settings.invoker, limits=replace(settings.invoker.limits, timeout_seconds=30.0)),
        delivery=replace(settings.delivery, allowed_networks=("127.0.0.0/8",), allow_http=True),  # loopback, http
    )
    running = await start_platform(fast, migrate=False, run_worker=True)
    yield running
    await running.stop(grace=0.5)


def _bundle(settings: Settings, key: Ed25519PrivateKey, runtime: str, rust: Callable[[], bytes]) -> str:
    bundles = settings.data_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    path = bundles / f"{runtime}-{uuid.uuid4().hex[:8]}.zip"
    if runtime == "python":
        signed_zip(path, key, "python", "handler.main", {"handler.py": PYTHON_ALERTS})
    elif runtime == "node":
        signed_zip(path, key, "node", "index.handler", {"index.js": NODE_ALERTS})
    else:
        signed_zip(path, key, "rust", "bootstrap", {"bootstrap": rust()}, executables=("bootstrap",))
    return f"file://{path}"


async def run_alert_task(
    client: DispatcherClient, ds: FixtureDataset, bundle_url: str, max_attempts: int = 2, **extra: str
) -> str:
    config = {
        "bundle_url": bundle_url,
        "dataset_uuid": ds.dataset_uuid,
        "sql": "SELECT block_number, value FROM dataset ORDER BY block_number",
        **extra,
    }
    spec = dispatcher_pb2.TaskSpec(
        org_id=ORG,
        operator="alert_evaluate",
        config_json=json.dumps(config),
        datasets=[ds.grant_pb],
        max_attempts=max_attempts,
    )
    task_id = (await client.create_tasks([spec]))[0]

    async def finished() -> dispatcher_pb2.GetTaskResponse | None:
        got = await client.get_task(task_id)
        return got if got.terminal else None

    got = await eventually(finished, timeout=90, interval=0.2)
    assert got.task.status == common_pb2.TASK_STATUS_COMPLETED, got
    return task_id


@pytest.mark.parametrize("runtime", ["python", "node", "rust"])
async def test_udf_alerts_are_buffer_published_under_the_attempt_prefix(
    alerting: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,
    rust_alerts: Callable[[], bytes],
    db: asyncpg.Connection,
    runtime: str,
) -> None:
    store = LocalObjectStore([settings.data_dir / "objects"])
    ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
    async with grpc.aio.insecure_channel(alerting.addr) as ch:
        client = DispatcherClient(ch, admin_token=settings.admin_token)
        task_id = await run_alert_task(client, ds, _bundle(settings, signing_key, runtime, rust_alerts))
    publishes = await db.fetch("SELECT * FROM buffered_publishes WHERE task_id = $1", uuid.UUID(task_id))
    assert len(publishes) == 1
    batch_uri = publishes[0]["batch_uri"]
    assert batch_uri.startswith(f"file://{settings.data_dir / 'scratch'}/{task_id}/1/")
    assert str(publishes[0]["org_id"]) == ORG
    text = await asyncio.to_thread(Path(batch_uri.removeprefix("file://")).read_text)
    rows = [json.loads(line) for line in text.splitlines()]
    assert {r["dedupe_key"] for r in rows} == EXPECTED_KEYS
    assert {r["payload"]["runtime"] for r in rows} == {runtime}
    # The query the UDF's rows came from is audited against this task.
    [audit] = await closed_audit_rows(db)
    assert (str(audit["task_id"]), audit["rpc"], audit["row_count"]) == (task_id, "task_query", 10)


@pytest.mark.parametrize("runtime", ["python", "node", "rust"])
async def test_alert_evaluation_is_delivered_once_per_event_and_channel(
    alerting: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,
    rust_alerts: Callable[[], bytes],
    db: asyncpg.Connection,
    runtime: str,
) -> None:
    """Parquet -> TaskQuery -> UDF -> BufferPublish -> Sink -> alert_events -> routing ->
    webhooks, with a receiver that fails every first try and the evaluation run twice."""
    store = LocalObjectStore([settings.data_dir / "objects"])
    ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
    with webhook_receiver(fail_first=True) as receiver:
        definition = await AlertRepository(alerting.pool).create_definition(
            ORG, "large transfers", [receiver.url("/ops"), receiver.url("/audit")]
        )
        bundle = _bundle(settings, signing_key, runtime, rust_alerts)
        async with grpc.aio.insecure_channel(alerting.addr) as ch:
            client = DispatcherClient(ch, admin_token=settings.admin_token)
            first = await run_alert_task(client, ds, bundle, alert_definition_id=definition)
            second = await run_alert_task(client, ds, bundle, alert_definition_id=definition)

        async def delivered() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n == 2 * len(EXPECTED_KEYS))

        await eventually(delivered, timeout=30, interval=0.2)
        events = await db.fetch("SELECT dedupe_key, producer_task_id, alert_definition_id FROM alert_events")
        assert {e["dedupe_key"] for e in events} == EXPECTED_KEYS and len(events) == 3
        assert {str(e["producer_task_id"]) for e in events} <= {first, second}
        assert {str(e["alert_definition_id"]) for e in events} == {definition}
        sent = Counter(r.idempotency_key for r in receiver.delivered())
        assert len(sent) == 6 and set(sent.values()) == {1}  # once per event and channel
        assert len(receiver.requests) == 12  # each first try failed, each retry succeeded
        assert {r.body["payload"]["runtime"] for r in receiver.delivered()} == {runtime}


async def test_a_udf_that_loops_forever_is_killed_and_the_task_retried(
    settings: Settings, signing_key: Ed25519PrivateKey, db: asyncpg.Connection
) -> None:
    quick = replace(
        settings, invoker=replace(settings.invoker, limits=replace(settings.invoker.limits, timeout_seconds=1.5))
    )
    running = await start_platform(quick, migrate=False, run_worker=True)
    try:
        store = LocalObjectStore([settings.data_dir / "objects"])
        ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
        path = settings.data_dir / "bundles" / "spin.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        spin = b"def main(event):\n    while True:\n        pass\n"
        signed_zip(path, signing_key, "python", "handler.main", {"handler.py": spin})
        async with grpc.aio.insecure_channel(running.addr) as ch:
            client = DispatcherClient(ch, admin_token=settings.admin_token)
            with pytest.raises(AssertionError):
                await run_alert_task(client, ds, f"file://{path}", max_attempts=2)
            task = await db.fetchrow("SELECT status, attempt, error_message, next_retry_at FROM tasks")
        assert (task["status"], task["attempt"], task["next_retry_at"]) == ("failed", 2, None)
        assert task["error_message"].startswith("udf/UDF_TIMEOUT")
        attempts = await db.fetch("SELECT outcome FROM task_attempts ORDER BY attempt")
        assert [a["outcome"] for a in attempts] == ["failed", "failed"]
        assert await db.fetchval("SELECT count(*) FROM buffered_publishes") == 0
    finally:
        await running.stop(grace=0.5)


# A UDF that talks to the platform itself, holding only what the sandbox gives it: the
# capability token and the bridged task endpoint. It tries the granted dataset, a dataset
# it was not granted, and a direct connection to the platform's TCP address.
SELF_SERVICE_UDF = b"""
import json, os, socket
import grpc
from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc

def main(event, context):
    token = os.environ["TRACE_TASK_CAPABILITY"]
    stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(os.environ["TRACE_TASK_ENDPOINT"]))
    md = (("x-trace-task-capability", token),)
    out = {"env": sorted(os.environ)}
    for name, ds in (("granted", event["config"]["granted"]), ("other", event["config"]["other"])):
        req = query_pb2.TaskQueryRequest(task_id=context.task_id, attempt=context.attempt, dataset_uuid=ds,
                                         sql="SELECT count(*) FROM dataset")
        try:
            resp = stub.TaskQuery(req, metadata=md, timeout=20)
            out[name] = resp.rows[0].values[0].int_value
        except grpc.RpcError as err:
            out[name] = err.code().name
    host, port = event["config"]["platform"].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        out["direct"] = "connected"
    except OSError as err:
        out["direct"] = type(err).__name__
    return {"alerts": [], "probe": out}
"""


async def test_a_udf_reads_only_granted_datasets_through_its_token(
    settings: Settings, signing_key: Ed25519PrivateKey, db: asyncpg.Connection
) -> None:
    # The platform's own interpreter, so the UDF has a gRPC client library.
    invoker = replace(
        settings.invoker, python=sys.executable, limits=replace(settings.invoker.limits, timeout_seconds=30.0)
    )
    venv = replace(settings, invoker=invoker)
    running = await start_platform(venv, migrate=False)
    try:
        store = LocalObjectStore([settings.data_dir / "objects"])
        granted = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
        other = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
        path = settings.data_dir / "bundles" / "self.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        signed_zip(path, signing_key, "python", "handler.main", {"handler.py": SELF_SERVICE_UDF})
        async with grpc.aio.insecure_channel(running.addr) as ch:
            client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
            spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="udf", datasets=[granted.grant_pb])
            task_id = (await client.create_tasks([spec]))[0]
            claimed = (await client.claim(task_id, "w")).claimed
        invoker = running.invoker.invoker
        result = await invoker.invoke(
            Invocation(
                task_id=task_id,
                attempt=claimed.attempt,
                lease_token=claimed.lease_token,
                lease_expires_at=claimed.lease_expires_at.ToDatetime(tzinfo=UTC),
                capability_token=claimed.capability_token,
                bundle_url=f"file://{path}",
                config={"granted": granted.dataset_uuid, "other": other.dataset_uuid, "platform": running.addr},
            )
        )
        assert result.ok, result.stderr_tail
        probe = json.loads(result.result_json)["probe"]
        assert probe["granted"] == len(TRANSFERS["value"])
        assert probe["other"] == "PERMISSION_DENIED"
        assert "TRACE_DATABASE_URL" not in probe["env"] and "TRACE_WORKER_TOKEN" not in probe["env"]
        # No quiet condition: without its namespaces the invoker would have refused to run.
        assert invoker.plan.netns  # type: ignore[attr-defined]
        assert probe["direct"] != "connected"
        audit = await db.fetch("SELECT dataset_uuid FROM query_audit")
        assert [str(a["dataset_uuid"]) for a in audit] == [granted.dataset_uuid]
    finally:
        await running.stop(grace=0.5)
