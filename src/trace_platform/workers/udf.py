"""The udf operator: a DAG job's bundle over the upstream version that triggered it,
publishing one version of the job's own dataset.

The task (created by DAG routing, core/dag_routing) is granted exactly its input versions
and declares exactly its output version. The operator reads each input through TaskQuery
(``SELECT * FROM <relation>``, the relation attached to the granted dataset, with the
attempt's capability token), runs the bundle in the invoker's sandbox with
``inputs = {<relation>: {columns, rows, truncated}}``, and checks its answer strictly
(core/udf_output). The rows go to one Parquet object and a manifest (written last) under
the output version's own prefix, and the completion publishes that version: the
Dispatcher accepts it only because the task declared it. The output version is derived
from the task id, so a retried attempt rewrites the same objects under the same version.
A UDF that fails or answers badly fails the attempt and publishes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from trace_platform.adapters.invoker.base import Invocation, LazyInvoker, RuntimeInvoker, no_result_error
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.clients.channel import ClientTls, open_channel
from trace_platform.clients.query import QueryClient
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, object_prefix
from trace_platform.core.udf_output import COLUMN_RE, udf_table
from trace_platform.core.validation import require_uuid
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.workers.cryo_ingest import storage_ref_for
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

OPERATOR = "udf"
MAX_INPUTS = 16
MAX_INPUT_ROWS = 10_000  # the Query Service's row cap; a fuller input fails closed
OBJECT_KEY = "part-0.parquet"


def _config(raw: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], dict[str, Any]]:
    bad = InvalidArgument("UDF_CONFIG", "config needs bundle_url, 1 to 16 inputs with distinct relations, and output")
    try:
        bundle_url, sha = str(raw["bundle_url"]), str(raw.get("bundle_sha256", ""))
        inputs, output = list(raw["inputs"]), raw["output"]
        require_uuid("output.dataset_uuid", output["dataset_uuid"])
        require_uuid("output.dataset_version", output["dataset_version"])
        for i, source in enumerate(inputs):
            require_uuid(f"inputs[{i}].dataset_uuid", source["dataset_uuid"])
            if not COLUMN_RE.match(str(source["relation"])):
                raise bad
    except (KeyError, TypeError, ValueError):
        raise bad from None
    relations = {str(s["relation"]) for s in inputs}
    if not 1 <= len(inputs) <= MAX_INPUTS or len(relations) != len(inputs):
        raise bad
    return bundle_url, sha, inputs, output


def udf_operator(
    make_invoker: Callable[[], RuntimeInvoker],
    query_addr: str,
    stores: ObjectStores,
    datasets_uri: str,
    udf_timeout: float,
    query_tls: ClientTls | None = None,
) -> Operator:
    """``make_invoker`` runs on first use (it probes the machine's sandboxing once)."""
    invoker = LazyInvoker(make_invoker)

    async def udf(ctx: OperatorContext) -> OperatorResult:
        bundle_url, sha, sources, output = _config(ctx.config)
        inputs = await _read_inputs(ctx, query_addr, query_tls, sources)
        ref = ctx.ref  # the token is read at each use: heartbeats renew it
        result = await (await invoker.get()).invoke(
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
                inputs=inputs,
            )
        )
        if not result.ok:
            raise no_result_error(result.error_reason)
        table = udf_table(result.result_json)  # before any write: a bad answer leaves nothing
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


async def _read_inputs(
    ctx: OperatorContext, query_addr: str, tls: ClientTls | None, sources: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each input in full under its relation name, as the grant pins it: the version read
    must be the one routed (a grant is one version), and an input over the row cap fails
    the attempt rather than hand the UDF part of it."""
    inputs: dict[str, Any] = {}
    async with open_channel(query_addr, tls) as channel:
        client = QueryClient(channel)
        for source in sources:
            relation = str(source["relation"])
            rows = await client.task_query(
                ctx.capability_token,
                ctx.ref.task_id,
                ctx.ref.attempt,
                {relation: source["dataset_uuid"]},
                f"SELECT * FROM {relation}",
                MAX_INPUT_ROWS,
            )
            version = rows.versions.get(relation)
            if source.get("dataset_version") and version and version != source["dataset_version"]:
                raise FailedPrecondition("UDF_INPUT_VERSION", f"input {relation} read another version", category="udf")
            if rows.truncated:
                raise FailedPrecondition(
                    "UDF_INPUT_TOO_LARGE", f"input {relation} has more than {MAX_INPUT_ROWS} rows", category="udf"
                )
            inputs[relation] = {
                "columns": [name for name, _ in rows.columns],
                "rows": [_jsonable(r) for r in rows.rows],
                "truncated": False,
            }
    return inputs


def _jsonable(row: list[Any]) -> list[Any]:
    return ["0x" + v.hex() if isinstance(v, bytes) else v for v in row]


def _write(stores: ObjectStores, prefix_uri: str, output: dict[str, Any], table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    store = stores.for_uri(prefix_uri)
    store.put_bytes(prefix_uri + OBJECT_KEY, data)
    objects = [ManifestObject(OBJECT_KEY, len(data), hashlib.sha256(data).hexdigest(), table.num_rows)]
    manifest = build_manifest(output["dataset_uuid"], output["dataset_version"], objects)
    store.put_bytes(prefix_uri + MANIFEST_NAME, manifest.to_json())  # last: readers see whole versions
