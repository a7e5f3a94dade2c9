"""alert_evaluate end to end up to the Sink's input: TaskQuery over a granted Parquet
dataset, a sandboxed UDF (Python, Node, cargo-built Rust) that turns rows into alert
rows, the batch artifact under the attempt's write prefix, and a fenced BufferPublish."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
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
from tests.integration.conftest import ORG
from tests.udf_fixtures import build_rust_bootstrap, shared_tmp_dir
from trace_platform.adapters.objectstore.stores import LocalObjectStore
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
def rust_alerts() -> Iterator[bytes]:
    yield build_rust_bootstrap(shared_tmp_dir("trace-rust-alerts-"), RUST_ALERTS).read_bytes()


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
    fast = replace(settings, invoker=replace(settings.invoker, timeout_seconds=30.0))
    running = await start_platform(fast, migrate=False, run_worker=True)
    yield running
    await running.stop(grace=0.5)


def _bundle(settings: Settings, key: Ed25519PrivateKey, runtime: str, rust: bytes) -> str:
    bundles = settings.data_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    path = bundles / f"{runtime}-{uuid.uuid4().hex[:8]}.zip"
    if runtime == "python":
        signed_zip(path, key, "python", "handler.main", {"handler.py": PYTHON_ALERTS})
    elif runtime == "node":
        signed_zip(path, key, "node", "index.handler", {"index.js": NODE_ALERTS})
    else:
        signed_zip(path, key, "rust", "bootstrap", {"bootstrap": rust}, executables=("bootstrap",))
    return f"file://{path}"


async def run_alert_task(client: DispatcherClient, ds: FixtureDataset, bundle_url: str, max_attempts: int = 2) -> str:
    config = {
        "bundle_url": bundle_url,
        "dataset_uuid": ds.dataset_uuid,
        "sql": "SELECT block_number, value FROM dataset ORDER BY block_number",
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
    rust_alerts: bytes,
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
    audit = await db.fetchrow("SELECT task_id, rpc, row_count FROM query_audit")
    assert (str(audit["task_id"]), audit["rpc"], audit["row_count"]) == (task_id, "task_query", 10)
