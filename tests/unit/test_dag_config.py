"""DAG documents: strict validation with field paths and reason codes, and what a
routed task is (pure logic)."""

from __future__ import annotations

import uuid

import pytest
import yaml

from trace_platform.core.dag_config import (
    AlertEvaluateJob,
    ChainSyncJob,
    UdfJob,
    canonical_jobs,
    parse_dag,
    yaml_sha256,
)
from trace_platform.core.dag_routing import RouteTarget, build_task, route_task_id
from trace_platform.core.errors import InvalidArgument

BUNDLE = "0b6f3f4e-6a8e-4a57-9c1a-1f2e3d4c5b6a"

DAG = f"""
name: transfers
jobs:
  - name: ingest
    kind: chain_sync
    chain_sync:
      chain_id: 31337
      mode: {{kind: follow_head, from_block: 0, tail_lag: 0, head_poll_interval_seconds: 1, max_head_age_seconds: 30}}
      streams:
        transactions: {{cryo_dataset_name: transactions, rpc_pool: standard, chunk_size: 10, max_inflight: 2}}
  - name: large_transfers
    kind: alert_evaluate
    bundle: {BUNDLE}
    alert: large transfers
    upstream: ingest.transactions
    sql: SELECT block_number, value FROM dataset WHERE to_address = '0x{"ab" * 20}'
  - name: enrich
    kind: udf
    bundle: {BUNDLE}
    upstream: [ingest.transactions]
  - name: on_enriched
    kind: alert_evaluate
    bundle: {BUNDLE}
    alert: enriched
    upstream: enrich
    sql: SELECT * FROM dataset
"""


def _doc() -> dict:  # type: ignore[type-arg]
    doc = yaml.safe_load(DAG)
    assert isinstance(doc, dict)
    return doc


def _refused(doc: object) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as exc:
        parse_dag(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return exc.value


def test_a_valid_dag_parses_into_its_jobs() -> None:
    spec = parse_dag(DAG)
    assert spec.name == "transfers"
    ingest, alert, udf, second = spec.jobs
    assert isinstance(ingest, ChainSyncJob) and ingest.spec.name == "ingest"
    assert ingest.spec.streams[0].dataset_key == "transactions"
    assert isinstance(alert, AlertEvaluateJob) and alert.upstream == "ingest.transactions"
    assert alert.bundle_id == BUNDLE and alert.alert == "large transfers"
    assert isinstance(udf, UdfJob) and udf.upstream == ("ingest.transactions",)
    assert isinstance(second, AlertEvaluateJob) and second.upstream == "enrich"
    assert [j["kind"] for j in canonical_jobs(spec)] == ["chain_sync", "alert_evaluate", "udf", "alert_evaluate"]


def test_the_version_identity_is_the_yaml_bytes() -> None:
    assert yaml_sha256(DAG) == yaml_sha256(DAG)
    assert yaml_sha256(DAG) != yaml_sha256(DAG + "\n# a comment\n")


@pytest.mark.parametrize(
    ("mutate", "reason", "field"),
    [
        (lambda d: d["jobs"][1].update(upstream="x.transactions"), "UNKNOWN_UPSTREAM", "jobs[1].upstream"),
        (lambda d: d["jobs"][1].update(upstream="ingest.logs"), "UNKNOWN_UPSTREAM", "jobs[1].upstream"),
        (lambda d: d["jobs"][1].update(upstream="ingest"), "UNKNOWN_UPSTREAM", "jobs[1].upstream"),
        (lambda d: d["jobs"][3].update(upstream="large_transfers"), "UNKNOWN_UPSTREAM", "jobs[3].upstream"),
        (
            lambda d: d["jobs"][2].update(upstream=["ingest.transactions", "nope"]),
            "UNKNOWN_UPSTREAM",
            "jobs[2].upstream[1]",
        ),
        (lambda d: d["jobs"][2].update(name="ingest"), "DUPLICATE_JOB", "jobs[2].name"),
        (lambda d: d["jobs"][1].update(colour="red"), "UNKNOWN_KEY", "jobs[1].colour"),
        (lambda d: d.update(owner="me"), "UNKNOWN_KEY", "owner"),
        (lambda d: d["jobs"][1].pop("sql"), "MISSING_FIELD", "jobs[1].sql"),
        (lambda d: d["jobs"][1].update(kind="cron"), "INVALID_KIND", "jobs[1].kind"),
        (lambda d: d["jobs"][1].update(bundle="file:///tmp/b.zip"), "INVALID_TYPE", "jobs[1].bundle"),
        (lambda d: d["jobs"][1].update(name="Big"), "INVALID_NAME", "jobs[1].name"),
        (lambda d: d["jobs"][1].update(sql=""), "OUT_OF_RANGE", "jobs[1].sql"),
        (lambda d: d.update(jobs=[]), "MISSING_FIELD", "jobs"),
        (lambda d: d.pop("name"), "MISSING_FIELD", "name"),
        # The embedded chain_sync document is validated as today, its path under the job's.
        (
            lambda d: d["jobs"][0]["chain_sync"]["streams"]["transactions"].update(chunk_size=0),
            "OUT_OF_RANGE",
            "jobs[0].chain_sync.streams.transactions.chunk_size",
        ),
        (lambda d: d["jobs"][0]["chain_sync"].update(name="other"), "UNKNOWN_KEY", "jobs[0].chain_sync.name"),
        (
            lambda d: d["jobs"][0]["chain_sync"]["streams"]["transactions"].update(rpc_pool="http://node:8545"),
            "URL_IN_CONFIG",
            "jobs[0].chain_sync.streams.transactions.rpc_pool",
        ),
    ],
)
def test_invalid_documents_are_refused_with_the_field_path(mutate, reason: str, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = _doc()
    mutate(doc)
    err = _refused(doc)
    assert (err.reason, err.metadata.get("field")) == (reason, field), err.message
    assert err.message.startswith(field)


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DELETE FROM dataset", "NOT_A_SELECT"),
        ("SELECT * FROM other_table", "DISALLOWED_RELATION"),
        ("SELECT 1; SELECT 2", "MULTIPLE_STATEMENTS"),
    ],
)
def test_alert_sql_passes_the_query_gate_at_deploy(sql: str, reason: str) -> None:
    doc = _doc()
    doc["jobs"][1]["sql"] = sql
    err = _refused(doc)
    assert (err.reason, err.metadata["field"]) == (reason, "jobs[1].sql")
    assert sql not in err.message


def test_cycles_between_udf_jobs_are_refused() -> None:
    doc = _doc()
    doc["jobs"].append({"name": "a", "kind": "udf", "bundle": BUNDLE, "upstream": ["b"]})
    doc["jobs"].append({"name": "b", "kind": "udf", "bundle": BUNDLE, "upstream": ["a"]})
    err = _refused(doc)
    assert err.reason == "DAG_CYCLE" and err.metadata["field"] in ("jobs[4].upstream", "jobs[5].upstream")
    selfish = _doc()
    selfish["jobs"][2]["upstream"] = ["enrich"]
    assert _refused(selfish).reason == "DAG_CYCLE"


def test_yaml_tricks_are_refused() -> None:
    assert _refused("name: a\nname: b\njobs: []\n").reason == "DUPLICATE_KEY"
    assert _refused("name: &n x\njobs: *n\n").reason == "YAML_ALIAS"
    assert _refused("- not a mapping\n").reason == "NOT_A_MAPPING"


def _target(kind: str, **over: object) -> RouteTarget:
    base = {
        "dag_id": str(uuid.uuid4()),
        "dag_name": "transfers",
        "org_id": str(uuid.uuid4()),
        "dag_version_id": str(uuid.uuid4()),
        "job_name": "large_transfers",
        "kind": kind,
        "spec": {"sql": "SELECT 1 FROM dataset", "upstream": ["ingest.transactions"]},
        "resolved": {
            "bundle_url": "file:///b.zip",
            "bundle_sha256": "a" * 64,
            "alert_definition_id": str(uuid.uuid4()),
            "output_dataset_uuid": str(uuid.uuid4()),
        },
        "upstream": "ingest.transactions",
        "dataset_uuid": str(uuid.uuid4()),
        "dataset_version": str(uuid.uuid4()),
        "storage_ref": {"scheme": "file", "prefix": "/x", "bucket": "", "glob": "*.parquet"},
        "range_start": 10,
        "range_end": 20,
    }
    base.update(over)
    return RouteTarget(**base)  # type: ignore[arg-type]


def test_an_alert_task_is_granted_exactly_the_new_version_and_declares_no_dataset() -> None:
    t = _target("alert_evaluate")
    task = build_task(t)
    assert task is not None and task.operator == "alert_evaluate"
    assert task.task_id == route_task_id(t.dag_id, t.job_name, t.dataset_uuid, t.dataset_version)
    assert task.datasets == [
        {"dataset_uuid": t.dataset_uuid, "dataset_version": t.dataset_version, "storage_ref": t.storage_ref}
    ]
    assert task.declared_outputs == []
    c = task.config
    assert (c["dataset_uuid"], c["range_start"], c["range_end"]) == (t.dataset_uuid, 10, 20)
    assert c["alert_definition_id"] == t.resolved["alert_definition_id"]
    assert (c["bundle_url"], c["bundle_sha256"], c["sql"]) == ("file:///b.zip", "a" * 64, "SELECT 1 FROM dataset")
    assert build_task(t) == task  # deterministic: a second routing computes the same task


def test_a_udf_task_declares_only_its_own_dataset_version() -> None:
    t = _target("udf", job_name="enrich")
    task = build_task(t)
    assert task is not None and task.operator == "udf"
    [out] = task.declared_outputs
    assert out["dataset_uuid"] == t.resolved["output_dataset_uuid"] and out == task.config["output"]
    assert task.config["inputs"][0]["relation"] == "ingest_transactions"
    other = build_task(_target("udf", job_name="enrich", dag_id=t.dag_id, dataset_uuid=t.dataset_uuid))
    assert other is not None and other.declared_outputs[0]["dataset_version"] != out["dataset_version"]
    assert build_task(_target("chain_sync")) is None
