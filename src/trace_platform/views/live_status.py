"""The chain_sync progress view of `trace lite up`, `trace status --watch` and the demo.

On a terminal it is one live table (rich) redrawn in place: per stream, blocks synced of
the target, blocks per second and the time left. Anywhere else (a pipe, a log file) it
prints the status text only when the status changes, so logs stay readable: rates move
on every poll, so they are printed with a change but never cause one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from trace_platform.core.sync_progress import (
    RateMeter,
    eta_seconds,
    format_eta,
    format_progress,
    format_rate,
    target_blocks,
)

if TYPE_CHECKING:
    from trace_platform.clients.chain_sync import pb


def stream_rows(jobs: Sequence[pb.ChainSyncStatus], meter: RateMeter, now: float) -> list[dict[str, str]]:
    """One row per stream, feeding ``meter`` with this poll's counts."""
    rows = []
    for job in jobs:
        state = "complete" if job.completed else "paused" if job.paused else "running"
        to_block = job.to_block if job.HasField("to_block") else None
        for s in job.streams:
            key = f"{job.job_id or job.name}/{s.dataset_key}"
            meter.observe(key, now, s.completed_blocks)
            head = s.head_block if s.HasField("head_block") else None
            total = target_blocks(job.from_block, to_block, head)
            rate = meter.rate(key)
            eta = 0.0 if job.completed else eta_seconds(s.completed_blocks, total, rate)
            rows.append(
                {
                    "stream": s.dataset_name,
                    "state": state,
                    "progress": format_progress(s.completed_blocks, total),
                    "rate": format_rate(rate),
                    "eta": format_eta(eta),
                    "in_flight": str(s.in_flight),
                    "head": "-" if head is None else str(head),
                    "error": s.last_error,
                }
            )
    return rows


def plain_progress(rows: list[dict[str, str]]) -> str:
    return "\n".join(
        f"  {r['stream']:<32} {r['progress']:>24}  {r['rate']:>12}  eta {r['eta']}"
        + (f"  last error {r['error']}" if r["error"] else "")
        for r in rows
    )


def live_table(rows: list[dict[str, str]]) -> Any:
    from rich.table import Table

    table = Table(title="chain_sync", title_justify="left", expand=False)
    for name, justify in (
        ("Stream", "left"),
        ("State", "left"),
        ("Synced", "right"),
        ("Rate", "right"),
        ("ETA", "right"),
        ("In flight", "right"),
        ("Head", "right"),
        ("Last error", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "Last error")  # type: ignore[arg-type]
    for r in rows:
        table.add_row(
            r["stream"], r["state"], r["progress"], r["rate"], r["eta"], r["in_flight"], r["head"], r["error"]
        )
    if not rows:
        table.add_row("no chain_sync jobs", "", "", "", "", "", "", "")
    return table


class ProgressView:
    """Feed it each poll's jobs with ``update``; use as a context manager."""

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        tty: bool | None = None,
        render_text: Callable[[Sequence[pb.ChainSyncStatus]], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.meter = RateMeter()
        self._clock = clock
        self._render_text = render_text
        self._last = ""
        self._live: Any = None

    def __enter__(self) -> ProgressView:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.out, force_terminal=True)
            self._live = Live(console=console, auto_refresh=False, transient=False)
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, jobs: Sequence[pb.ChainSyncStatus]) -> bool:
        """Redraw (terminal) or print when the status changed (elsewhere); True if drawn."""
        rows = stream_rows(jobs, self.meter, self._clock())
        if self._live is not None:
            self._live.update(live_table(rows), refresh=True)
            return True
        status = self._status_text(jobs)
        if status == self._last:
            return False
        self._last = status
        text = f"{status}\n{plain_progress(rows)}" if rows else status
        self.out.write(text + "\n")
        self.out.flush()
        return True

    def _status_text(self, jobs: Sequence[pb.ChainSyncStatus]) -> str:
        if self._render_text is not None:
            return self._render_text(jobs)
        return render_status(list(jobs))


def _render_verification(v: pb.ChainSyncVerification) -> str:
    """The latest scheduled integrity check (`verify:` in the job's YAML)."""
    when = f"{v.checked_at.ToDatetime():%Y-%m-%d %H:%M:%S}Z"
    if v.error:
        return f"verify: could not run at {when}: {v.error}"
    if not v.difference_count:
        return f"verify: [{v.from_block}, {v.to_block}) matches the node at {when}"
    first = ", ".join(f"block {d.block_number} {d.dataset_key} {d.field}" for d in v.differences[:3])
    return f"verify: [{v.from_block}, {v.to_block}) {v.difference_count} difference(s) at {when}: {first}"


def _render_reorgs(r: pb.ChainSyncReorgs) -> str:
    """Reorgs seen against the node, their depth, and what their repair re-extracted."""
    text = (
        f"reorgs: {r.seen} seen, last depth {r.last_depth}, deepest {r.max_depth}, "
        f"{r.ranges_repaired} range(s) repaired"
    )
    if r.repairing:
        text += ", repairing now"
    if r.repair_error:
        text += f"; repair failed: {r.repair_error} (`trace resume` retries it)"
    if r.stopped_reason:
        text += f"; stopped: {r.stopped_reason} (deeper than mode.max_reorg_depth)"
    return text


def render_status(jobs: list[pb.ChainSyncStatus]) -> str:
    lines = []
    for job in jobs:
        target = f"[{job.from_block}, {job.to_block})" if job.HasField("to_block") else f"[{job.from_block}, head)"
        state = "complete" if job.completed else "paused" if job.paused else "running"
        lines.append(f"{job.name}  chain {job.chain_id}  {job.mode} {target}  {state}")
        if job.HasField("last_verification"):
            lines.append("  " + _render_verification(job.last_verification))
        if job.HasField("reorgs"):
            lines.append("  " + _render_reorgs(job.reorgs))
        for s in job.streams:
            head = (
                f"head {s.head_block} @ {s.head_observed_at.ToDatetime():%H:%M:%S}"
                if s.HasField("head_block")
                else "head -"
            )
            error = f"  last error {s.last_error}" if s.last_error else ""
            lines.append(
                f"  {s.dataset_name:<32} synced to {s.synced_to:>10}  planned to {s.planned_to:>10}  "
                f"in flight {s.in_flight:>3}  done {s.completed_ranges:>5} ranges / {s.completed_blocks} blocks  "
                f"{head}{error}"
            )
            for f in s.failed_ranges[:5]:  # failed for good: resume retries them
                lines.append(
                    f"    failed [{f.range_start}, {f.range_end}) {f.reason} after {f.attempts} attempt(s): "
                    f"`trace resume {job.name}` retries it"
                )
            if len(s.failed_ranges) > 5:
                lines.append(f"    ... {len(s.failed_ranges) - 5} more failed range(s)")
    return "\n".join(lines) if lines else "no chain_sync jobs"


async def watch(
    fetch: Callable[[], Awaitable[Sequence[pb.ChainSyncStatus]]],
    view: ProgressView,
    interval: float = 1.0,
    until: Callable[[Sequence[pb.ChainSyncStatus]], bool] = lambda jobs: False,
    on_error: Callable[[Exception], bool] = lambda exc: False,
) -> Sequence[pb.ChainSyncStatus]:
    """Poll ``fetch`` every ``interval`` and show it until ``until(jobs)``; a fetch error
    that ``on_error`` accepts (True) skips that poll, any other is raised."""
    import asyncio

    while True:
        try:
            jobs = await fetch()
        except Exception as exc:
            if not on_error(exc):
                raise
        else:
            view.update(jobs)
            if until(jobs):
                return jobs
        await asyncio.sleep(interval)
