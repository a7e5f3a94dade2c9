"""Sink metrics: batches by outcome, rows and new events applied, dead letters by reason.

Outcomes: applied, duplicate (the publish was already settled), dead_lettered, retry
(transient failure: the message reappears), dropped (a message naming no publish).
Reasons are the sink's fixed reason codes (core.alert_rows); never publish ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.batches = Counter(
            "trace_sink_batches_total", "Buffer messages handled, by outcome", ["outcome"], registry=r
        )
        self.rows = Counter("trace_sink_rows_total", "Rows of applied batches", registry=r)
        self.new_events = Counter("trace_sink_events_created_total", "Alert events applied batches created", registry=r)
        self.dead_letters = Counter(
            "trace_sink_dead_letters_total", "Batches dead-lettered, by reason", ["reason"], registry=r
        )
        self.duration = Histogram(
            "trace_sink_batch_duration_seconds",
            "Time to read, validate and apply one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
