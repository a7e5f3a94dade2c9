"""Delivery metrics: attempts by channel type and outcome, and the send latency.

Outcomes: delivered, retrying, failed (gave up), lease_lost (another instance took the
delivery over). ``channel`` is the channel's type (``webhook``), never its key or URL.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


def channel_type(channel: str) -> str:
    kind = channel.split(":", 1)[0]
    return kind if kind == "webhook" else "unknown"


class DeliveryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.attempts = Counter(
            "trace_delivery_attempts_total",
            "Delivery attempts by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "trace_delivery_latency_seconds",
            "Time to send one delivery attempt (request to response)",
            ["channel"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
