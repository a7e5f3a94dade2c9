"""A routed alert_evaluate runs: two range versions of a DAG's chain_sync stream are
published, each routes to one alert_evaluate task that a real worker runs (TaskQuery over
exactly its granted range, a sandboxed Python UDF, BufferPublish, Sink), and each large
transfer arrives once as a webhook delivery under the DAG's alert definition."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.alert_udfs import PYTHON_ALERTS
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.dag_support import StaticBundleLookupDouble, dag_yaml
from tests.datasets import write_dataset
from tests.integration.conftest import fast_alert_settings
from tests.integration.test_alert_evaluate import signing_key  # noqa: F401  (fixture)
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.dataset_repository import register_version
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.core.config import Settings
from trace_platform.core.models import DatasetPublication
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Principal, Role

ORG = "00000000-0000-0000-0000-0000000000ee"
WHO = Principal(ORG, str(uuid.uuid4()), Role.EDITOR)


@pytest.fixture
async def running(settings: Settings, signing_key: Ed25519PrivateKey) -> AsyncIterator[RunningPlatform]:  # noqa: F811
    fast = fast_alert_settings(replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"}))
    fast = replace(fast, invoker=replace(fast.invoker, limits=replace(fast.invoker.limits, timeout_seconds=30.0)))
    platform = await start_platform(fast, migrate=False, run_worker=True)
    yield platform
    await platform.stop(grace=0.5)


async def test_each_published_range_is_evaluated_once_over_its_own_blocks(
    running: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    path = settings.data_dir / "bundles" / "alerts.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    signed_zip(path, signing_key, "python", "handler.main", {"handler.py": PYTHON_ALERTS})
    bundles = StaticBundleLookupDouble()
    bundle_id = bundles.add(ORG, f"file://{path}", hashlib.sha256(path.read_bytes()).hexdigest())
    with webhook_receiver() as receiver:
        definition = await AlertRepository(running.pool).create_definition(ORG, "large transfers", [receiver.url("/a")])
        service = DagService(DagRepository(running.pool), bundles, PostgresAlertLookup(running.pool), {"standard"})
        sql = "SELECT block_number, value FROM dataset ORDER BY block_number"
        await service.deploy(WHO, dag_yaml(bundle_id, sql=sql))
        await service.activate(WHO, "transfers", "1")
        stream = str(
            await db.fetchval(
                "SELECT s.dataset_uuid FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id"
                " WHERE j.name = 'transfers_ingest'"
            )
        )
        # Two ranges of the stream as cryo_ingest completions register them (no head is
        # observed, so the planner plans nothing itself).
        store = LocalObjectStore([settings.data_dir / "objects"])
        root = f"file://{settings.data_dir / 'objects'}"
        ranges = {
            (100, 105): {"block_number": [100, 101, 102, 103, 104], "value": [5, 1500, 7, 2000, 999]},
            (105, 110): {"block_number": [105, 106, 107, 108, 109], "value": [1000, 3, 4, 1, 2]},
        }
        versions = {}
        for (lo, hi), columns in ranges.items():
            ds = write_dataset(store, root, [pa.table(columns)], dataset_uuid=stream)
            async with running.pool.acquire() as conn, conn.transaction():
                pub = DatasetPublication(
                    stream, ds.dataset_version, ds.storage_ref, "cryo_ingest.transactions:v1", lo, hi
                )
                await register_version(conn, pub, None)
            versions[ds.dataset_version] = (lo, hi)

        async def delivered() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n == 3)

        await eventually(delivered, timeout=90, interval=0.2)
        tasks = await db.fetch("SELECT id, status, config::text AS config FROM tasks WHERE operator = 'alert_evaluate'")
        assert len(tasks) == 2 and {t["status"] for t in tasks} == {"completed"}
        by_task = {str(t["id"]): json.loads(t["config"])["dataset_version"] for t in tasks}
        assert set(by_task.values()) == set(versions)
        events = await db.fetch(
            "SELECT dedupe_key, producer_task_id, alert_definition_id, block_number FROM alert_events"
        )
        assert {e["dedupe_key"] for e in events} == {"large-transfer-101", "large-transfer-103", "large-transfer-105"}
        assert {str(e["alert_definition_id"]) for e in events} == {definition}
        for e in events:  # each event came from the task granted the range holding its block
            lo, hi = versions[by_task[str(e["producer_task_id"])]]
            assert lo <= e["block_number"] < hi
        # Each task's query read only its own range (5 rows each), audited against it.
        audits = await db.fetch("SELECT task_id, row_count FROM query_audit WHERE task_id IS NOT NULL")
        assert sorted((str(a["task_id"]), a["row_count"]) for a in audits) == sorted((t, 5) for t in by_task)
        assert len(receiver.delivered()) == 3


# Keeps the transfers of at least 500 and doubles them: its own dataset, read downstream.
DOUBLER = b"""
def main(event, context):
    src = event["inputs"]["transfers_ingest_transactions"]
    cols = src["columns"]
    b, v = cols.index("block_number"), cols.index("value")
    rows = [[r[b], r[v] * 2] for r in src["rows"] if r[v] >= 500]
    return {"columns": ["block_number", "doubled"], "rows": rows}
"""


async def test_a_udf_publishes_its_own_dataset_and_an_alert_reads_it(
    running: RunningPlatform,
    settings: Settings,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    bundles = StaticBundleLookupDouble()
    ids = {}
    for name, source in (("alerts", PYTHON_ALERTS), ("doubler", DOUBLER)):
        path = settings.data_dir / "bundles" / f"{name}.zip"
        path.parent.mkdir(parents=True, exist_ok=True)
        signed_zip(path, signing_key, "python", "handler.main", {"handler.py": source})
        ids[name] = bundles.add(ORG, f"file://{path}", hashlib.sha256(path.read_bytes()).hexdigest())
    jobs = f"""  - name: enrich
    kind: udf
    bundle: {ids["doubler"]}
    upstream: [transfers_ingest.transactions]
  - name: on_enriched
    kind: alert_evaluate
    bundle: {ids["alerts"]}
    alert: large transfers
    upstream: enrich
    sql: SELECT block_number, doubled AS value FROM dataset ORDER BY block_number
"""
    # The direct alert of dag_yaml reads nothing large: only on_enriched flags rows.
    text = dag_yaml(ids["alerts"], sql="SELECT block_number, value FROM dataset WHERE value > 10000", extra_jobs=jobs)
    with webhook_receiver() as receiver:
        await AlertRepository(running.pool).create_definition(ORG, "large transfers", [receiver.url("/a")])
        service = DagService(DagRepository(running.pool), bundles, PostgresAlertLookup(running.pool), {"standard"})
        await service.deploy(WHO, text)
        await service.activate(WHO, "transfers", "1")
        stream = str(
            await db.fetchval(
                "SELECT s.dataset_uuid FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id"
                " WHERE j.name = 'transfers_ingest'"
            )
        )
        store = LocalObjectStore([settings.data_dir / "objects"])
        columns = {"block_number": [100, 101, 102, 103, 104], "value": [5, 1500, 7, 2000, 999]}
        ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(columns)], dataset_uuid=stream)
        async with running.pool.acquire() as conn, conn.transaction():
            pub = DatasetPublication(
                stream, ds.dataset_version, ds.storage_ref, "cryo_ingest.transactions:v1", 100, 105
            )
            await register_version(conn, pub, None)

        async def delivered() -> bool:
            n = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n == 3)

        await eventually(delivered, timeout=120, interval=0.2)
        udf = await db.fetchrow(
            "SELECT id, status, declared_outputs::text AS declared FROM tasks WHERE operator = 'udf'"
        )
        assert udf["status"] == "completed"
        [out] = json.loads(udf["declared"])
        version = await db.fetchrow(
            "SELECT storage_ref::text AS ref, producer_task_id FROM dataset_versions WHERE dataset_uuid = $1",
            uuid.UUID(out["dataset_uuid"]),
        )
        assert version["producer_task_id"] == udf["id"]
        assert out["dataset_version"] in json.loads(version["ref"])["prefix"]
        events = await db.fetch("SELECT dedupe_key, source_dataset_uuid FROM alert_events ORDER BY dedupe_key")
        # 999 doubled is 1998: flagged only through the udf's dataset.
        assert [e["dedupe_key"] for e in events] == ["large-transfer-101", "large-transfer-103", "large-transfer-104"]
        tasks = await db.fetch("SELECT operator, status FROM tasks ORDER BY operator")
        assert sorted((t["operator"], t["status"]) for t in tasks) == [
            ("alert_evaluate", "completed"),
            ("alert_evaluate", "completed"),
            ("udf", "completed"),
        ]
        assert len(receiver.delivered()) == 3
