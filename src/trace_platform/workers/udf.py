"""The udf operator: a DAG job's bundle over the upstream version that triggered it,
publishing one version of the job's own dataset.

The task (created by DAG routing, core/dag_routing) is granted exactly its input version
and declares exactly its output version. The operator reads the input through TaskQuery
(``SELECT * FROM dataset``, the token's grant), runs the bundle in the invoker's sandbox
with ``inputs = {<relation>: {columns, rows, truncated}}``, and expects
``{"columns": [names], "rows": [[values]]}`` back. The rows go to one Parquet object and
a manifest (written last) under the output version's own prefix, and the completion
publishes that version: the Dispatcher accepts it only because the task declared it.
The output version is derived from the task id, so a retried attempt rewrites the same
objects under the same version.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trace_platform.adapters.invoker.base import Invocation, RuntimeInvoker
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.clients.channel import ClientTls, open_channel
from trace_platform.clients.query import QueryClient
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, object_prefix
from trace_platform.core.validation import require_uuid
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.workers.cryo_ingest import storage_ref_for
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

OPERATOR = "udf"
MAX_INPUT_ROWS = 100_000
MAX_OUTPUT_ROWS = 100_000
_RETRYABLE = {"UDF_TIMEOUT", "UDF_KILLED"}
OBJECT_KEY = "part-0.parquet"


def _config(raw: dict[str, Any]) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    try:
        bundle_url, sha = str(raw["bundle_url"]), str(raw.get("bundle_sha256", ""))
        [source] = raw["inputs"]
        output = raw["output"]
        require_uuid("inputs[0].dataset_uuid", source["dataset_uuid"])
        require_uuid("output.dataset_uuid", output["dataset_uuid"])
        require_uuid("output.dataset_version", output["dataset_version"])
    except (KeyError, TypeError, ValueError):
        raise InvalidArgument("UDF_CONFIG", "config needs bundle_url, one input and the output version") from None
    return bundle_url, sha, source, output


def udf_operator(
    make_invoker: Callable[[], RuntimeInvoker],
    query_addr: str,
    stores: ObjectStores,
    datasets_uri: str,
    udf_timeout: float,
    query_tls: ClientTls | None = None,
) -> Operator:
    """``make_invoker`` runs on first use (it probes the machine's sandboxing once)."""
    invokers: list[RuntimeInvoker] = []

    async def udf(ctx: OperatorContext) -> OperatorResult:
        if not invokers:
            invokers.append(await asyncio.to_thread(make_invoker))
        bundle_url, sha, source, output = _config(ctx.config)
        ref = ctx.ref
        async with open_channel(query_addr, query_tls) as channel:
            rows = await QueryClient(channel).task_query(
                ctx.capability_token,
                ref.task_id,
                ref.attempt,
                source["dataset_uuid"],
                "SELECT * FROM dataset",
                MAX_INPUT_ROWS,
            )
        result = await invokers[0].invoke(
            Invocation(
                task_id=ref.task_id,
                attempt=ref.attempt,
                lease_token=ref.lease_token,
                lease_expires_at=datetime.now(UTC) + timedelta(seconds=udf_timeout),
                capability_token=ctx.capability_token,
                bundle_url=bundle_url,
                bundle_sha256=sha,
                operator=OPERATOR,
                config={k: v for k, v in ctx.config.items() if k not in ("bundle_url", "bundle_sha256")},
                inputs={
                    str(source.get("relation") or "dataset"): {
                        "columns": [name for name, _ in rows.columns],
                        "rows": [_jsonable(r) for r in rows.rows],
                        "truncated": rows.truncated,
                    }
                },
            )
        )
        if not result.ok:
            kind = Unavailable if result.error_reason in _RETRYABLE else FailedPrecondition
            raise kind(result.error_reason, "the UDF produced no result", category="udf")
        table = _table(result.result_json)
        prefix_uri = f"{datasets_uri.rstrip('/')}/{object_prefix(output['dataset_uuid'], output['dataset_version'])}"
        await asyncio.to_thread(_write, stores, prefix_uri, output, table)
        publication = common_pb2.DatasetPublication(
            dataset_uuid=output["dataset_uuid"],
            dataset_version=output["dataset_version"],
            storage_ref=storage_ref_for(prefix_uri),
            config_hash=str(output.get("config_hash") or ""),
        )
        return OperatorResult(datasets_published=[publication])

    return udf


def _jsonable(row: list[Any]) -> list[Any]:
    return ["0x" + v.hex() if isinstance(v, bytes) else v for v in row]


def _table(result_json: str) -> pa.Table:
    """The UDF's answer as a table; anything else is the UDF's failure, never the platform's."""
    bad = FailedPrecondition(
        "UDF_RESULT_INVALID", 'the UDF result must be {"columns": [names], "rows": [[values]]}', category="udf"
    )
    try:
        doc = json.loads(result_json)
        columns, rows = doc["columns"], doc["rows"]
    except (ValueError, KeyError, TypeError):
        raise bad from None
    if (
        not isinstance(columns, list)
        or not columns
        or not all(isinstance(c, str) and c for c in columns)
        or len(set(columns)) != len(columns)
        or not isinstance(rows, list)
        or len(rows) > MAX_OUTPUT_ROWS
        or not all(isinstance(r, list) and len(r) == len(columns) for r in rows)
    ):
        raise bad
    try:
        return pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    except (pa.ArrowException, ValueError, TypeError):
        raise bad from None


def _write(stores: ObjectStores, prefix_uri: str, output: dict[str, Any], table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    store = stores.for_uri(prefix_uri)
    store.put_bytes(prefix_uri + OBJECT_KEY, data)
    objects = [ManifestObject(OBJECT_KEY, len(data), hashlib.sha256(data).hexdigest(), table.num_rows)]
    manifest = build_manifest(output["dataset_uuid"], output["dataset_version"], objects)
    store.put_bytes(prefix_uri + MANIFEST_NAME, manifest.to_json())  # last: readers see whole versions
