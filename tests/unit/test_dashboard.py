"""The Grafana dashboard (deploy/grafana/trace.json) references only metrics the code
registers: every PromQL expression is tokenized, its metric names extracted, and each
checked against the families the metrics modules put on a registry (counter samples
end in _total, histogram samples in _bucket/_sum/_count). A renamed or removed metric
fails here, not on an operator's empty panel."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trace_platform.adapters.postgres.metrics_repository import DispatcherSnapshot, StreamSnapshot
from trace_platform.servers.chain_sync.metrics import ChainSyncMetrics
from trace_platform.servers.common.metrics import process_registry
from trace_platform.servers.delivery.metrics import DeliveryMetrics
from trace_platform.servers.dispatcher.metrics import DispatcherMetrics
from trace_platform.servers.invoker.metrics import InvokerMetrics
from trace_platform.servers.query.metrics import QueryMetrics
from trace_platform.servers.sink.metrics import SinkMetrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "trace.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
TOKEN = re.compile(
    r'\s+|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'  # space, strings
    r"|\[[^\]]*\]"  # range and subquery selectors
    r"|[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?[smhdwy]?"  # numbers and durations
    r"|[A-Za-z_:][A-Za-z0-9_:]*"  # identifiers
    r"|==|!=|=~|!~|>=|<=|[-+*/%^(){},=<>]"
)


def registered_sample_names() -> set[str]:
    """Every sample name the code can expose, from the registries themselves."""

    async def no_dispatcher() -> DispatcherSnapshot:
        return DispatcherSnapshot()

    async def no_streams() -> list[StreamSnapshot]:
        return []

    registry = process_registry()
    QueryMetrics(registry)
    DispatcherMetrics(registry, no_dispatcher)
    ChainSyncMetrics(registry, no_streams)
    SinkMetrics(registry)
    DeliveryMetrics(registry)
    InvokerMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression: identifiers that are not functions or
    aggregations (followed by '(', or by/without), keywords, label names inside {...} or a by/without/
    on/ignoring list. Refuses what it cannot tokenize and unbalanced brackets."""
    tokens: list[str] = []
    pos = 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenize {expr[pos:]!r} in {expr!r}")
        if match.group().strip():
            tokens.append(match.group())
        pos = match.end()
    names: set[str] = set()
    depth = {"(": 0, "{": 0}
    label_list_depth: int | None = None
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in "({":
            depth[tok] += 1
        elif tok in ")}":
            opener = "(" if tok == ")" else "{"
            depth[opener] -= 1
            if depth[opener] < 0:
                raise ValueError(f"unbalanced {tok!r} in {expr!r}")
            if tok == ")" and label_list_depth is not None and depth["("] < label_list_depth:
                label_list_depth = None
        elif re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", tok):
            if tok in LABEL_LISTS and nxt == "(":
                label_list_depth = depth["("] + 1
            elif (
                nxt == "("
                or nxt in ("by", "without")
                or tok in KEYWORDS
                or depth["{"] > 0
                or label_list_depth is not None
            ):
                continue
            elif not re.fullmatch(r"[0-9.e+-]+[smhdwy]?", tok):
                names.add(tok)
    if any(depth.values()):
        raise ValueError(f"unbalanced brackets in {expr!r}")
    return names


def dashboard_exprs(node: Any) -> Iterator[str]:
    """Every target expr and every templating query of the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                yield from _label_values(value["query"])
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def _label_values(query: str) -> Iterator[str]:
    match = re.fullmatch(r"label_values\((.+),\s*[A-Za-z_]\w*\)", query.strip())
    if match:
        yield match.group(1)


def test_the_extractor_finds_metrics_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, rpc) (rate(trace_query_duration_seconds_bucket{rpc!="x"}[5m])))'
        " / on (rpc) group_left trace_query_in_flight offset 1h > bool 2"
    )
    assert promql_metric_names(expr) == {"trace_query_duration_seconds_bucket", "trace_query_in_flight"}
    with pytest.raises(ValueError, match="unbalanced"):
        promql_metric_names("rate(trace_query_total[5m]")


def test_every_dashboard_metric_is_registered_by_the_code() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = list(dashboard_exprs(dashboard))
    assert len(exprs) >= 20
    referenced = set().union(*(promql_metric_names(e) for e in exprs))
    missing = referenced - registered_sample_names()
    assert not missing, f"the dashboard references metrics no code registers: {sorted(missing)}"
    # The four views the dashboard exists for draw on each service.
    for prefix in ("trace_chain_sync_", "trace_dispatcher_", "trace_query_", "trace_delivery_", "trace_sink_"):
        assert any(name.startswith(prefix) for name in referenced), prefix


def test_a_missing_metric_is_caught() -> None:
    names = promql_metric_names("rate(trace_dispatcher_claimz_total[5m])")
    assert names - registered_sample_names() == {"trace_dispatcher_claimz_total"}
