"""The alert_evaluate operator: a query over a granted dataset, a sandboxed UDF that
turns rows into alert rows, and a buffer-publish of those rows for the Sink.

Every read and write uses the attempt's capability token and nothing else: the query
goes through TaskQuery (the token must grant the dataset), the batch artifact goes under
the token's per-attempt write prefix, and BufferPublish is fenced by the attempt. The
UDF runs in the invoker's sandbox with that token and the task endpoint only. Alert
rows must carry deterministic ``dedupe_key`` values, so a retried attempt publishes the
same keys and the Sink's upsert keeps one row per key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from trace_platform.adapters.invoker.base import Invocation, LazyInvoker, RuntimeInvoker, no_result_error
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.clients.channel import ClientTls, open_channel
from trace_platform.clients.query import QueryClient
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.storage_paths import attempt_prefix
from trace_platform.core.validation import require_uuid
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

OPERATOR = "alert_evaluate"
MAX_ALERTS = 10_000


def _config(raw: dict[str, Any]) -> tuple[str, str, str, str, int]:
    try:
        bundle_url, sql = str(raw["bundle_url"]), str(raw["sql"])
    except KeyError:
        raise InvalidArgument("ALERT_EVALUATE_CONFIG", "config needs bundle_url, dataset_uuid and sql") from None
    dataset_uuid = require_uuid("dataset_uuid", raw.get("dataset_uuid"))
    return bundle_url, str(raw.get("bundle_sha256", "")), dataset_uuid, sql, int(raw.get("limit", 10_000))


def alert_evaluate_operator(
    make_invoker: Callable[[], RuntimeInvoker],
    query_addr: str,
    stores: ObjectStores,
    scratch_uri: str,
    udf_timeout: float,
    query_tls: ClientTls | None = None,
) -> Operator:
    """``make_invoker`` runs on first use (it probes the machine's sandboxing once)."""
    lazy = LazyInvoker(make_invoker)

    async def alert_evaluate(ctx: OperatorContext) -> OperatorResult:
        invoker = await lazy.get()
        bundle_url, sha, dataset_uuid, sql, limit = _config(ctx.config)
        ref = ctx.ref  # the token is read at each call: heartbeats renew it
        async with open_channel(query_addr, query_tls) as channel:
            rows = await QueryClient(channel).task_query(
                ctx.capability_token, ref.task_id, ref.attempt, dataset_uuid, sql, limit
            )
        result = await invoker.invoke(
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
                    "columns": [name for name, _ in rows.columns],
                    "rows": [_jsonable(r) for r in rows.rows],
                    "truncated": rows.truncated,
                },
            )
        )
        if not result.ok:
            raise no_result_error(result.error_reason)
        alerts = _alerts(result.result_json)
        definition = ctx.config.get("alert_definition_id")
        if definition:  # the task's definition, not whatever the untrusted UDF wrote
            alerts = [{**a, "alert_definition_id": require_uuid("alert_definition_id", definition)} for a in alerts]
        if alerts:
            data = "".join(json.dumps(a, sort_keys=True) + "\n" for a in alerts).encode()
            name = f"alerts-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
            uri = attempt_prefix(scratch_uri, ref.task_id, ref.attempt) + name  # the token's write prefix
            store = stores.for_uri(uri)
            await asyncio.to_thread(store.put_bytes, uri, data)
            await ctx.dispatcher.buffer_publish(ref, ctx.capability_token, uri, len(data))
        return OperatorResult()

    return alert_evaluate


def _jsonable(row: list[Any]) -> list[Any]:
    return ["0x" + v.hex() if isinstance(v, bytes) else v for v in row]


def _alerts(result_json: str) -> list[dict[str, Any]]:
    """The UDF's answer: ``{"alerts": [{...}, ...]}``; the Sink validates each row strictly."""
    try:
        doc = json.loads(result_json)
    except ValueError:
        raise FailedPrecondition("UDF_RESULT_INVALID", "the UDF result is not JSON", category="udf") from None
    alerts = doc.get("alerts") if isinstance(doc, dict) else None
    if not isinstance(alerts, list) or len(alerts) > MAX_ALERTS or not all(isinstance(a, dict) for a in alerts):
        raise FailedPrecondition("UDF_RESULT_INVALID", 'the UDF result must be {"alerts": [objects]}', category="udf")
    return alerts
