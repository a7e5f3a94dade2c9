"""What a routed task is: from one published upstream dataset version and one downstream
job of the active DAG version, the task's operator, config, grant and declared outputs.
Pure logic, no I/O.

The task's id is derived from ``(dag, job, dataset, version)``, the routing ledger's key:
a routing that runs twice computes the same task, and the ledger keeps one.

Config per operator (what the worker reads):

``alert_evaluate``: ``bundle_url``, ``bundle_sha256``, ``dataset_uuid``, ``dataset_version``,
``sql``, ``alert_definition_id``, ``range_start``/``range_end`` (null outside chain_sync),
``dag``, ``dag_version_id``, ``job``. Granted exactly the new version (a chain_sync
version is one range), so the SQL over ``dataset`` sees the new blocks only. It declares
no dataset output: its alert rows go through BufferPublish, pinned to the definition.

``udf``: ``bundle_url``, ``bundle_sha256``, ``inputs`` (one ``{relation, upstream,
dataset_uuid, dataset_version, range_start, range_end}``: the version that triggered it),
``output`` (``{dataset_uuid, dataset_version, config_hash}``), ``dag``, ``dag_version_id``,
``job``. Granted the new version; declares exactly its ``output`` version.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from trace_platform.core.dag_config import ALERT_EVALUATE, UDF

ROUTE_NAMESPACE = uuid.UUID("b2e5c1a7-6d4f-5e0a-9c3b-7f1d2a8e4c60")
UDF_VERSION_NAMESPACE = uuid.UUID("e9a4d7c2-3b1f-5a6e-8d0c-4f2b7a1e9c35")


@dataclass(frozen=True)
class RouteTarget:
    """One downstream job of an active version that reads the published dataset."""

    dag_id: str
    dag_name: str
    org_id: str
    dag_version_id: str
    job_name: str
    kind: str
    spec: dict[str, Any]
    resolved: dict[str, Any]
    upstream: str
    dataset_uuid: str
    dataset_version: str
    storage_ref: dict[str, Any]
    range_start: int | None
    range_end: int | None


@dataclass(frozen=True)
class RoutedTask:
    target: RouteTarget
    task_id: str
    operator: str
    config: dict[str, Any]
    datasets: list[dict[str, Any]]
    declared_outputs: list[dict[str, Any]]


def route_task_id(dag_id: str, job_name: str, dataset_uuid: str, dataset_version: str) -> str:
    return str(uuid.uuid5(ROUTE_NAMESPACE, f"{dag_id}:{job_name}:{dataset_uuid}:{dataset_version}"))


def relation_name(upstream: str) -> str:
    """``ingest.transactions`` -> ``ingest_transactions``: a SQL identifier for the input."""
    return upstream.replace(".", "_")


def build_task(t: RouteTarget) -> RoutedTask | None:
    """The task for ``t``; None for a kind that is never routed (chain_sync has no upstream)."""
    task_id = route_task_id(t.dag_id, t.job_name, t.dataset_uuid, t.dataset_version)
    grant = {"dataset_uuid": t.dataset_uuid, "dataset_version": t.dataset_version, "storage_ref": t.storage_ref}
    common = {
        "bundle_url": t.resolved["bundle_url"],
        "bundle_sha256": t.resolved["bundle_sha256"],
        "dag": t.dag_name,
        "dag_version_id": t.dag_version_id,
        "job": t.job_name,
    }
    if t.kind == ALERT_EVALUATE:
        config = {
            **common,
            "dataset_uuid": t.dataset_uuid,
            "dataset_version": t.dataset_version,
            "range_start": t.range_start,
            "range_end": t.range_end,
            "sql": t.spec["sql"],
            "alert_definition_id": t.resolved["alert_definition_id"],
        }
        return RoutedTask(t, task_id, ALERT_EVALUATE, config, [grant], [])
    if t.kind == UDF:
        output = {
            "dataset_uuid": t.resolved["output_dataset_uuid"],
            "dataset_version": str(uuid.uuid5(UDF_VERSION_NAMESPACE, task_id)),
            "config_hash": f"udf.{t.resolved['bundle_sha256'][:16]}:v1",
        }
        config = {
            **common,
            "inputs": [
                {
                    "relation": relation_name(t.upstream),
                    "upstream": t.upstream,
                    "dataset_uuid": t.dataset_uuid,
                    "dataset_version": t.dataset_version,
                    "range_start": t.range_start,
                    "range_end": t.range_end,
                }
            ],
            "output": output,
        }
        return RoutedTask(t, task_id, UDF, config, [grant], [output])
    return None


def target_from_row(row: Any, dataset_uuid: str, dataset_version: str) -> RouteTarget:
    """A ``route_targets`` row (a mapping of its columns)."""
    return RouteTarget(
        dag_id=str(row["dag_id"]),
        dag_name=row["dag_name"],
        org_id=str(row["org_id"]),
        dag_version_id=str(row["dag_version_id"]),
        job_name=row["job_name"],
        kind=row["kind"],
        spec=json.loads(row["spec"]),
        resolved=json.loads(row["resolved"]),
        upstream=row["upstream"],
        dataset_uuid=dataset_uuid,
        dataset_version=dataset_version,
        storage_ref=json.loads(row["storage_ref"]),
        range_start=row["range_start"],
        range_end=row["range_end"],
    )
