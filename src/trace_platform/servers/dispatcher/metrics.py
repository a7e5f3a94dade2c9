"""Dispatcher metrics: counters of what this process did (claims, lease expiries, retries,
completions) and gauges of the shared state read from PostgreSQL on scrape (tasks by
state and operator, queued tasks' age, wake-up queue depth, outbox lag).

Labels are bounded: states, operators, outcomes, queue names; never task ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trace_platform.adapters.postgres.metrics_repository import DispatcherSnapshot
from trace_platform.servers.common.metrics import LoopSnapshot


class DispatcherStateCollector(Collector):
    """Gauges from one cached ``DispatcherSnapshot`` (families without samples before the
    first read, so the registry always names them)."""

    def __init__(self, snapshot: LoopSnapshot[DispatcherSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._snapshot.get())

    @staticmethod
    def _families(snap: DispatcherSnapshot | None) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("trace_dispatcher_tasks", "Tasks by state and operator", labels=["state", "operator"])
        oldest = GaugeMetricFamily(
            "trace_dispatcher_oldest_queued_task_age_seconds",
            "Time the oldest queued task of each operator has waited",
            labels=["operator"],
        )
        depth = GaugeMetricFamily("trace_dispatcher_queue_depth", "Wake-up messages in each queue", labels=["queue"])
        queue_age = GaugeMetricFamily(
            "trace_dispatcher_queue_oldest_message_age_seconds", "Age of each queue's oldest message", labels=["queue"]
        )
        pending = GaugeMetricFamily("trace_dispatcher_outbox_pending", "Outbox rows not yet relayed")
        lag = GaugeMetricFamily("trace_dispatcher_outbox_lag_seconds", "Age of the oldest outbox row not yet relayed")
        if snap is not None:
            for (state, operator), n in sorted(snap.tasks.items()):
                tasks.add_metric([state, operator], n)
            for operator, age in sorted(snap.oldest_queued.items()):
                oldest.add_metric([operator], age)
            for queue, backlog in sorted(snap.queues.items()):
                depth.add_metric([queue], backlog.count)
                queue_age.add_metric([queue], backlog.oldest_seconds)
            pending.add_metric([], snap.outbox.count)
            lag.add_metric([], snap.outbox.oldest_seconds)
        yield from (tasks, oldest, depth, queue_age, pending, lag)


class DispatcherMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        read_snapshot: Callable[[], Awaitable[DispatcherSnapshot]] | None = None,
    ) -> None:
        r = registry
        self.claims = Counter(
            "trace_dispatcher_claims_total",
            "Claim requests by operator and outcome",
            ["operator", "outcome"],
            registry=r,
        )
        self.completions = Counter(
            "trace_dispatcher_completions_total", "Completions recorded, by status", ["status"], registry=r
        )
        self.lease_expiries = Counter(
            "trace_dispatcher_lease_expiries_total", "Running attempts failed by the lease reaper", registry=r
        )
        self.retries = Counter(
            "trace_dispatcher_retries_total", "Failed tasks queued again by the retry scheduler", registry=r
        )
        self.outbox_relayed = Counter(
            "trace_dispatcher_outbox_relayed_total", "Outbox rows relayed to their queues", registry=r
        )
        if read_snapshot is not None:
            registry.register(DispatcherStateCollector(LoopSnapshot(read_snapshot)))
