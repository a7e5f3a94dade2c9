"""A DAG udf job runs: a registered range of a chain_sync stream routes to the udf, a real
worker reads it through TaskQuery, runs a sandboxed Python or Node bundle (bwrap), writes
its answer as Parquet under the declared output version's own prefix and publishes that
version; the version is queryable by ``<dag>.<job>`` through the public Query RPC and
routes on to an alert_evaluate that delivers once per row it flags. A UDF answering
garbage fails its attempt with UDF_RESULT_INVALID and publishes nothing.

The udf task's own token (all a compromised bundle holds) publishes its declared version
at its own prefix and nothing else: not that version over other objects, not another
version, not its input, not another dataset."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.alert_udfs import NODE_ALERTS, PYTHON_ALERTS
from tests.api_support import make_user
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.dag_support import StaticBundleLookupDouble, dag_yaml
from tests.datasets import write_dataset
from tests.integration.conftest import fast_alert_settings, publication_at_home, user_client
from tests.integration.test_alert_evaluate import signing_key  # noqa: F401  (fixture)
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.dataset_repository import register_version
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.datasets import DagOutputSource, DatasetsClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import NotFound, PermissionDenied
from trace_platform.core.manifest import MANIFEST_NAME
from trace_platform.core.models import DatasetPublication, TaskRef
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Principal, Role
from trace_platform.workers.udf import MAX_INPUT_ROWS, OBJECT_KEY

ORG = "00000000-0000-0000-0000-0000000000ee"
WHO = Principal(ORG, str(uuid.uuid4()), Role.EDITOR)
RANGE = {"block_number": [100, 101, 102, 103, 104], "value": [5, 1500, 7, 2000, 999]}

# Records form: keeps transfers of at least 500, doubled, with a label per row.
NODE_DOUBLER = b"""
exports.handler = async (event) => {
  const src = event.inputs.transfers_ingest_transactions;
  const b = src.columns.indexOf("block_number"), v = src.columns.indexOf("value");
  return src.rows.filter((r) => r[v] >= 500)
    .map((r) => ({ block_number: r[b], doubled: r[v] * 2, label: `b${r[b]}` }));
};
"""
PYTHON_DOUBLER = b"""
def main(event, context):
    src = event["inputs"]["transfers_ingest_transactions"]
    b, v = src["columns"].index("block_number"), src["columns"].index("value")
    rows = [[r[b], r[v] * 2, f"b{r[b]}"] for r in src["rows"] if r[v] >= 500]
    return {"columns": ["block_number", "doubled", "label"], "types": ["BIGINT", "DOUBLE", "VARCHAR"], "rows": rows}
"""
# One column, two types: no schema to publish.
PYTHON_GARBAGE = b"""
def main(event, context):
    return {"columns": ["block_number"], "rows": [[1], ["two"]]}
"""


def _listing(prefix_uri: str) -> tuple[list[str], int]:
    """The names under a version's local prefix, and the rows of its Parquet object."""
    prefix = Path(prefix_uri.removeprefix("file://"))
    return sorted(p.name for p in prefix.iterdir()), pq.read_table(prefix / OBJECT_KEY).num_rows


def _leftovers(root: Path, version: str) -> list[Path]:
    return list(root.rglob(f"*{version}*"))


@pytest.fixture
async def running(settings: Settings, signing_key: Ed25519PrivateKey) -> AsyncIterator[RunningPlatform]:  # noqa: F811
    fast = fast_alert_settings(replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"}))
    fast = replace(fast, invoker=replace(fast.invoker, limits=replace(fast.invoker.limits, timeout_seconds=30.0)))
    platform = await start_platform(fast, migrate=False, run_worker=True)
    yield platform
    await platform.stop(grace=0.5)


def _bundle(
    settings: Settings,
    key: Ed25519PrivateKey,
    bundles: StaticBundleLookupDouble,
    name: str,
    runtime: str,
    source: bytes,
) -> str:
    path = settings.data_dir / "bundles" / f"{name}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    if runtime == "node":
        signed_zip(path, key, "node", "index.handler", {"index.js": source})
    else:
        signed_zip(path, key, "python", "handler.main", {"handler.py": source})
    return bundles.add(ORG, f"file://{path}", hashlib.sha256(path.read_bytes()).hexdigest())


async def _deploy_chain(running: RunningPlatform, bundles: StaticBundleLookupDouble, udf: str, alerts: str) -> None:
    """transfers_ingest.transactions -> enrich (udf) -> on_enriched (alert_evaluate); the
    DAG's direct alert of dag_yaml flags nothing (no value above 10000)."""
    jobs = f"""  - name: enrich
    kind: udf
    bundle: {udf}
    upstream: [transfers_ingest.transactions]
  - name: on_enriched
    kind: alert_evaluate
    bundle: {alerts}
    alert: large transfers
    upstream: enrich
    sql: SELECT block_number, doubled AS value FROM dataset ORDER BY block_number
"""
    text = dag_yaml(alerts, sql="SELECT block_number, value FROM dataset WHERE value > 10000", extra_jobs=jobs)
    service = DagService(DagRepository(running.pool), bundles, PostgresAlertLookup(running.pool), {"standard"})
    await service.deploy(WHO, text)
    await service.activate(WHO, "transfers", "1")


async def _publish_range(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection, columns: dict[str, list[int]] = RANGE
) -> DatasetPublication:
    stream = str(
        await db.fetchval(
            "SELECT s.dataset_uuid FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id"
            " WHERE j.name = 'transfers_ingest'"
        )
    )
    store = LocalObjectStore([settings.data_dir / "objects"])
    ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(columns)], dataset_uuid=stream)
    async with running.pool.acquire() as conn, conn.transaction():
        pub = DatasetPublication(stream, ds.dataset_version, ds.storage_ref, "cryo_ingest.transactions:v1", 100, 105)
        await register_version(conn, pub, None)
    return pub


@pytest.mark.parametrize(("runtime", "doubler"), [("node", NODE_DOUBLER), ("python", PYTHON_DOUBLER)])
async def test_a_udf_output_is_published_queryable_by_name_and_alerted_on_once_per_row(
    runtime: str,
    doubler: bytes,
    running: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    bundles = StaticBundleLookupDouble()
    udf = _bundle(settings, signing_key, bundles, "doubler", runtime, doubler)
    alerts = _bundle(
        settings, signing_key, bundles, "alerts", runtime, NODE_ALERTS if runtime == "node" else PYTHON_ALERTS
    )
    with webhook_receiver() as receiver:
        await AlertRepository(running.pool).create_definition(ORG, "large transfers", [receiver.url("/a")])
        await _deploy_chain(running, bundles, udf, alerts)
        await _publish_range(running, settings, db)

        async def delivered() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n == 3)

        await eventually(delivered, timeout=120, interval=0.2)
        task = await db.fetchrow(
            "SELECT id, status, attempt, declared_outputs::text AS declared FROM tasks WHERE operator = 'udf'"
        )
        assert (task["status"], task["attempt"]) == ("completed", 1)
        [out] = json.loads(task["declared"])
        versions = await db.fetch(
            "SELECT dataset_version, producer_task_id, storage_ref::text AS ref FROM dataset_versions"
            " WHERE dataset_uuid = $1",
            uuid.UUID(out["dataset_uuid"]),
        )
        assert [(str(v["dataset_version"]), v["producer_task_id"]) for v in versions] == [
            (out["dataset_version"], task["id"])
        ]
        # The version's own prefix: one Parquet object and the manifest, nothing else.
        names, rows_written = _listing(json.loads(versions[0]["ref"])["prefix"])
        assert (names, rows_written) == (sorted([MANIFEST_NAME, OBJECT_KEY]), 3)
        # Exactly one alert per flagged row of the udf's dataset (999 doubled is 1998).
        events = await db.fetch("SELECT dedupe_key, producer_task_id FROM alert_events ORDER BY dedupe_key")
        assert [e["dedupe_key"] for e in events] == ["large-transfer-101", "large-transfer-103", "large-transfer-104"]
        assert len(receiver.delivered()) == 3
        on_enriched = await db.fetch(
            "SELECT t.id, t.status, r.dataset_version FROM tasks t JOIN dag_routes r ON r.task_id = t.id"
            " WHERE r.job_name = 'on_enriched'"
        )
        assert [(t["status"], str(t["dataset_version"])) for t in on_enriched] == [
            ("completed", out["dataset_version"])
        ]
        assert {e["producer_task_id"] for e in events} == {on_enriched[0]["id"]}

    # A member of the org reads the udf's dataset by its registry name once an editor
    # published it (DatasetService.Publish of the DAG output), and by the published name.
    editor = await make_user(running.pool, settings, "editor", org_id=ORG)
    async with grpc.aio.insecure_channel(running.addr) as channel:
        user = await user_client(channel, settings, org_id=ORG)
        sql = "SELECT block_number, doubled, label FROM dataset ORDER BY block_number"
        with pytest.raises(NotFound):  # registered, not yet published
            await user.query("transfers.enrich", sql)
        datasets = DatasetsClient(channel, token=editor.token)
        await datasets.publish("enriched", DagOutputSource("transfers", "enrich", 0))
        info = await datasets.get("transfers.enrich")
        assert (info.kind, info.current_version, info.version_count) == ("versioned", out["dataset_version"], 1)
        assert [c.name for c in info.columns] == ["block_number", "doubled", "label"]
        # Python declares doubled DOUBLE; Node's records infer it from integers.
        assert info.columns[1].type == ("double" if runtime == "python" else "int64")
        for name in ("transfers.enrich", "enriched"):
            rows = await user.query(name, sql)
            assert rows.rows == [[101, 3000, "b101"], [103, 4000, "b103"], [104, 1998, "b104"]]
            assert [c for c, _ in rows.columns] == ["block_number", "doubled", "label"]


async def test_a_udf_answering_garbage_fails_with_the_reason_and_publishes_nothing(
    running: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    bundles = StaticBundleLookupDouble()
    udf = _bundle(settings, signing_key, bundles, "garbage", "python", PYTHON_GARBAGE)
    alerts = _bundle(settings, signing_key, bundles, "alerts", "python", PYTHON_ALERTS)
    with webhook_receiver() as receiver:
        await AlertRepository(running.pool).create_definition(ORG, "large transfers", [receiver.url("/a")])
        await _deploy_chain(running, bundles, udf, alerts)
        await _publish_range(running, settings, db)

        async def failed() -> asyncpg.Record | None:
            row: asyncpg.Record | None = await db.fetchrow(
                "SELECT id, status, attempt, next_retry_at, error_message, declared_outputs::text AS declared"
                " FROM tasks WHERE operator = 'udf' AND error_message IS NOT NULL"
            )
            return row

        task = await eventually(failed, timeout=120, interval=0.2)
        assert task["error_message"].startswith("udf/UDF_RESULT_INVALID:")
        # Another attempt would get the same answer: failed for good at once, no retry.
        assert (task["status"], task["attempt"], task["next_retry_at"]) == ("failed", 1, None)
        assert "block_number" in task["error_message"] and "two" not in task["error_message"]

        async def direct_alert_done() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate' AND status = 'completed'"
            )
            return bool(n == 1)

        # The same range's direct alert ran (routing worked); give a stray publication time.
        await eventually(direct_alert_done, timeout=60)
        await asyncio.sleep(1.0)
        [out] = json.loads(task["declared"])
        n = await db.fetchval(
            "SELECT count(*) FROM dataset_versions WHERE dataset_uuid = $1", uuid.UUID(out["dataset_uuid"])
        )
        assert n == 0
        assert await db.fetchval("SELECT count(*) FROM dag_routes WHERE job_name = 'on_enriched'") == 0
        assert _leftovers(settings.data_dir / "objects", out["dataset_version"]) == []
        assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
        assert receiver.delivered() == []


@pytest.fixture
async def no_worker(settings: Settings) -> AsyncIterator[RunningPlatform]:
    platform = await start_platform(replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"}), migrate=False)
    yield platform
    await platform.stop(grace=0.5)


async def test_the_udf_tasks_token_publishes_its_declared_output_and_nothing_else(
    no_worker: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    """What the UDF holds (the attempt's capability token) is all a compromised bundle
    could use: every publication but the declared version at its own prefix is refused."""
    bundles = StaticBundleLookupDouble()
    bundle = bundles.add(ORG)
    await AlertRepository(no_worker.pool).create_definition(ORG, "large transfers", ["https://example.invalid/a"])
    await _deploy_chain(no_worker, bundles, bundle, bundle)
    upstream = await _publish_range(no_worker, settings, db)

    async def routed() -> asyncpg.Record | None:
        row: asyncpg.Record | None = await db.fetchrow(
            "SELECT id, config::text AS config FROM tasks WHERE operator = 'udf'"
        )
        return row

    task = await eventually(routed, timeout=30)
    out = json.loads(task["config"])["output"]
    async with grpc.aio.insecure_channel(no_worker.addr) as channel:
        client = DispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)
        claimed = (await client.claim(str(task["id"]), "w-evil")).claimed
        ref = TaskRef(str(task["id"]), claimed.attempt, claimed.lease_token)
        token = claimed.capability_token
        foreign = common_pb2.DatasetPublication(
            dataset_uuid=out["dataset_uuid"],
            dataset_version=out["dataset_version"],
            storage_ref=common_pb2.StorageRef(**upstream.storage_ref.to_dict()),  # the input's objects
        )
        attempts = {
            "declared version, foreign storage": foreign,
            "another version of its dataset": publication_at_home(settings, out["dataset_uuid"], str(uuid.uuid4())),
            "a new version of its input": publication_at_home(settings, upstream.dataset_uuid, str(uuid.uuid4())),
            "another dataset": publication_at_home(settings, str(uuid.uuid4()), str(uuid.uuid4())),
        }
        reasons: dict[str, str] = {}
        for what, pub in attempts.items():
            with pytest.raises(PermissionDenied) as exc:
                await client.complete(ref, token, datasets_published=[pub])
            reasons[what] = exc.value.reason
        assert reasons == dict.fromkeys(attempts, "PUBLICATION_NOT_ALLOWED")
        n = await db.fetchval("SELECT count(*) FROM dataset_versions")
        assert n == 1, "only the upstream range is registered"
        mine = publication_at_home(
            settings, out["dataset_uuid"], out["dataset_version"], config_hash=out["config_hash"]
        )
        done = await client.complete(ref, token, datasets_published=[mine])
        assert done.status == common_pb2.TASK_STATUS_COMPLETED
    versions = await db.fetch("SELECT dataset_uuid::text AS d, dataset_version::text AS v FROM dataset_versions")
    assert sorted((r["d"], r["v"]) for r in versions) == sorted(
        [(upstream.dataset_uuid, upstream.dataset_version), (out["dataset_uuid"], out["dataset_version"])]
    )


async def test_an_input_over_the_query_row_cap_fails_closed_and_publishes_nothing(
    running: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    bundles = StaticBundleLookupDouble()
    udf = _bundle(settings, signing_key, bundles, "doubler", "python", PYTHON_DOUBLER)
    alerts = _bundle(settings, signing_key, bundles, "alerts", "python", PYTHON_ALERTS)
    await AlertRepository(running.pool).create_definition(ORG, "large transfers", ["https://example.invalid/a"])
    await _deploy_chain(running, bundles, udf, alerts)
    n = MAX_INPUT_ROWS + 1
    await _publish_range(running, settings, db, {"block_number": [100 + i % 5 for i in range(n)], "value": [1] * n})

    async def failed() -> asyncpg.Record | None:
        row: asyncpg.Record | None = await db.fetchrow(
            "SELECT error_message, declared_outputs::text AS declared FROM tasks"
            " WHERE operator = 'udf' AND error_message IS NOT NULL"
        )
        return row

    task = await eventually(failed, timeout=120, interval=0.2)
    assert task["error_message"].startswith("udf/UDF_INPUT_TOO_LARGE:")
    [out] = json.loads(task["declared"])
    count = await db.fetchval(
        "SELECT count(*) FROM dataset_versions WHERE dataset_uuid = $1", uuid.UUID(out["dataset_uuid"])
    )
    assert count == 0
