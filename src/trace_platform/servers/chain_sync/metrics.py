"""chain_sync metrics: per stream, gauges read from PostgreSQL on scrape (cursor, synced-to,
head, lag in blocks and seconds, ranges in flight and failed for good), and counters of
what this process's planner, head observer and reorg watcher did.

Labels: org, job and stream names (bounded by the configured jobs); never task ids.
Lag in seconds is the age of the stream's oldest range still in flight (0 with none): the
blocks below synced-to stopped being synced at most that long ago. It is a lower bound;
``trace_chain_sync_lag_blocks`` also counts what is not planned yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trace_platform.adapters.postgres.metrics_repository import StreamSnapshot
from trace_platform.servers.common.metrics import LoopSnapshot

STREAM_LABELS = ["org", "job", "stream"]


class StreamCollector(Collector):
    def __init__(self, snapshot: LoopSnapshot[list[StreamSnapshot]]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._snapshot.get())

    @staticmethod
    def _families(streams: list[StreamSnapshot] | None) -> Iterator[Metric]:
        def family(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=STREAM_LABELS)

        cursor = family("trace_chain_sync_cursor_block", "Exclusive end of what the planner scheduled")
        synced = family("trace_chain_sync_synced_block", "Exclusive end of the contiguous completed ranges")
        head = family("trace_chain_sync_head_block", "Latest head observed on the stream's RPC pool")
        lag_blocks = family("trace_chain_sync_lag_blocks", "Blocks between synced-to and the target")
        lag_seconds = family("trace_chain_sync_lag_seconds", "Age of the stream's oldest range in flight")
        in_flight = family("trace_chain_sync_ranges_in_flight", "Ranges scheduled and not completed")
        failed = family("trace_chain_sync_ranges_failed", "Ranges whose task failed for good (resume retries them)")
        for s in streams or ():
            labels = [s.org, s.job, s.stream]
            cursor.add_metric(labels, s.cursor)
            synced.add_metric(labels, s.synced_to)
            if s.head_block is not None:
                head.add_metric(labels, s.head_block)
            if s.target is not None:
                lag_blocks.add_metric(labels, max(0, s.target - s.synced_to))
            lag_seconds.add_metric(labels, s.oldest_in_flight_seconds)
            in_flight.add_metric(labels, s.in_flight)
            failed.add_metric(labels, s.failed)
        yield from (cursor, synced, head, lag_blocks, lag_seconds, in_flight, failed)


class ChainSyncMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        read_streams: Callable[[], Awaitable[list[StreamSnapshot]]] | None = None,
    ) -> None:
        r = registry
        self.ranges_planned = Counter(
            "trace_chain_sync_ranges_planned_total", "Ranges (tasks) the planner scheduled", registry=r
        )
        self.head_observations = Counter(
            "trace_chain_sync_head_observations_total",
            "Head polls by outcome (ok, unreachable, wrong_chain, no_url)",
            ["outcome"],
            registry=r,
        )
        self.reorgs = Counter(
            "trace_chain_sync_reorgs_total",
            "Reorgs the reorg watcher saw, by outcome (repairing: a repair started; too_deep: the job stopped)",
            ["outcome"],
            registry=r,
        )
        if read_streams is not None:
            registry.register(StreamCollector(LoopSnapshot(read_streams)))
