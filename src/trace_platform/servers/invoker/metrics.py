"""RuntimeInvoker metrics: runs by runtime and outcome, cold starts, timeouts, run time.

``MeteredInvoker`` wraps the configured invoker, so runs reached through the gRPC service
and runs of the in-process worker count alike. Outcome is the run's reason code
(``ok``, ``UDF_TIMEOUT``, ... or the refusal's reason, e.g. ``SANDBOX_UNAVAILABLE``);
a run refused before its bundle named a runtime has runtime ``unknown``.
The local invoker starts a fresh runtime process for every run, so each run it starts
is a cold start; a backend that cannot tell (Lambda) counts none.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from trace_platform.adapters.invoker.base import Invocation, InvocationResult, RuntimeInvoker
from trace_platform.core.errors import TraceError

UNKNOWN_RUNTIME = "unknown"


class InvokerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.runs = Counter(
            "trace_invoker_runs_total", "UDF runs by runtime and outcome", ["runtime", "outcome"], registry=r
        )
        self.cold_starts = Counter(
            "trace_invoker_cold_starts_total", "Runs that started a fresh runtime", ["runtime"], registry=r
        )
        self.timeouts = Counter(
            "trace_invoker_timeouts_total", "Runs killed at their deadline", ["runtime"], registry=r
        )
        self.duration = Histogram(
            "trace_invoker_run_duration_seconds",
            "Wall time of a UDF run, process start to exit",
            ["runtime"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )


class MeteredInvoker:
    """A ``RuntimeInvoker`` that records every run of ``inner`` in ``metrics``."""

    def __init__(self, inner: RuntimeInvoker, metrics: InvokerMetrics, cold_every_run: bool) -> None:
        self.inner = inner
        self.metrics = metrics
        self._cold_every_run = cold_every_run

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        m = self.metrics
        try:
            result = await self.inner.invoke(invocation)
        except TraceError as exc:
            m.runs.labels(UNKNOWN_RUNTIME, exc.reason).inc()
            raise
        except Exception:
            m.runs.labels(UNKNOWN_RUNTIME, "INTERNAL").inc()
            raise
        runtime = result.runtime or UNKNOWN_RUNTIME
        m.runs.labels(runtime, result.error_reason or "ok").inc()
        m.duration.labels(runtime).observe(result.duration_seconds)
        if result.timed_out:
            m.timeouts.labels(runtime).inc()
        if self._cold_every_run:
            m.cold_starts.labels(runtime).inc()
        return result

    async def close(self) -> None:
        await self.inner.close()
