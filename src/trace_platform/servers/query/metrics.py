"""Query Service metrics, on the process registry (servers/common/metrics serves it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class QueryMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.queries = Counter("trace_query_total", "Successful queries", ["rpc"], registry=r)
        self.denials = Counter("trace_query_denied_total", "Refused queries by reason", ["rpc", "reason"], registry=r)
        self.errors = Counter("trace_query_errors_total", "Failed queries by reason", ["rpc", "reason"], registry=r)
        self.duration = Histogram(
            "trace_query_duration_seconds",
            "Query duration, gate to audit",
            ["rpc"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.rows = Counter("trace_query_rows_total", "Rows returned", ["rpc"], registry=r)
        self.audit_failures = Counter(
            "trace_query_audit_failures_total", "Audit rows not opened or not closed", ["stage"], registry=r
        )
        self.in_flight = Gauge("trace_query_in_flight", "Queries running now", registry=r)
