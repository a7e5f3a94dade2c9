"""The operators a worker runs that need the platform's settings and endpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from prometheus_client import CollectorRegistry

from trace_platform.adapters.invoker.base import RuntimeInvoker
from trace_platform.adapters.objectstore.factory import artifact_stores, datasets_uri, object_stores, scratch_uri
from trace_platform.core.config import Settings
from trace_platform.core.cryo_task import OPERATOR as OPERATOR_CRYO
from trace_platform.roles.context import client_tls
from trace_platform.servers.invoker.app import build_runtime_invoker, metered_runtime_invoker
from trace_platform.workers.alert_evaluate import OPERATOR as OPERATOR_ALERT
from trace_platform.workers.alert_evaluate import alert_evaluate_operator
from trace_platform.workers.compact import OPERATOR as OPERATOR_COMPACT
from trace_platform.workers.compact import compact_operator
from trace_platform.workers.cryo_ingest import cryo_ingest_operator
from trace_platform.workers.runtime import Operator
from trace_platform.workers.udf import OPERATOR as OPERATOR_UDF
from trace_platform.workers.udf import udf_operator


def with_task_endpoint(settings: Settings, addr: str) -> Settings:
    """UDFs reach the platform's task APIs at ``addr`` unless an endpoint is configured."""
    if settings.invoker.task_endpoint:
        return settings
    return replace(settings, invoker=replace(settings.invoker, task_endpoint=addr))


def platform_operators(
    settings: Settings,
    addr: str,
    invoker: Callable[[], RuntimeInvoker] | None = None,
    registry: CollectorRegistry | None = None,
) -> dict[str, Operator]:
    """Operators that need the platform's settings (stores, RPC pools, staging, invoker);
    ``addr`` is where the Query Service (alert inputs) listens. Without ``invoker`` each
    task builds the configured backend, its runs counted on ``registry`` when given."""
    settings = with_task_endpoint(settings, addr)
    if invoker is None:
        invoker = (
            (lambda: metered_runtime_invoker(settings, registry))
            if registry is not None
            else (lambda: build_runtime_invoker(settings))
        )
    return {
        OPERATOR_CRYO: cryo_ingest_operator(
            settings.data_dir / "staging" / "cryo", settings.rpc_pools, object_stores(settings), datasets_uri(settings)
        ),
        OPERATOR_COMPACT: compact_operator(object_stores(settings), datasets_uri(settings)),
        OPERATOR_ALERT: alert_evaluate_operator(
            invoker,
            addr,
            artifact_stores(settings),
            scratch_uri(settings),
            settings.invoker.limits.timeout_seconds,
            client_tls(settings.tls),
        ),
        OPERATOR_UDF: udf_operator(
            invoker,
            addr,
            object_stores(settings),
            datasets_uri(settings),
            settings.invoker.limits.timeout_seconds,
            client_tls(settings.tls),
        ),
    }
