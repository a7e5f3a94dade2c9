"""Sync progress as people read it: blocks per second and the time left, per stream.

Pure logic (no I/O, no protobuf): the status views feed ``RateMeter`` with each stream's
completed block count as they poll and ask it for a rate over a sliding window; the
estimate is the blocks left over that rate. Invariant: a rate is only reported from two
samples at least ``min_span`` seconds apart in the window, so one fast poll never
claims a speed, and a stream that stopped moving reports 0 blocks/s (no estimate)
once its window holds only the stalled samples.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RateMeter:
    window_seconds: float = 30.0
    min_span: float = 1.0
    _samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def observe(self, key: str, now: float, done_blocks: int) -> None:
        samples = self._samples.setdefault(key, deque())
        if samples and done_blocks < samples[-1][1]:
            samples.clear()  # the count went back (a re-applied job): start over
        samples.append((now, done_blocks))
        # Keep one sample older than the window so the span always covers it.
        while len(samples) > 2 and now - samples[1][0] >= self.window_seconds:
            samples.popleft()

    def rate(self, key: str) -> float | None:
        """Blocks per second over the window; None until two samples ``min_span`` apart."""
        samples = self._samples.get(key)
        if not samples or len(samples) < 2:
            return None
        (t0, d0), (t1, d1) = samples[0], samples[-1]
        if t1 - t0 < self.min_span:
            return None
        return (d1 - d0) / (t1 - t0)


def target_blocks(from_block: int, to_block: int | None, head_block: int | None) -> int | None:
    """Blocks the stream must sync: to its fixed target, or up to the observed head
    (inclusive) when it follows the head; None when neither is known yet."""
    if to_block is not None:
        return max(to_block - from_block, 0)
    if head_block is not None:
        return max(head_block + 1 - from_block, 0)
    return None


def eta_seconds(done_blocks: int, total_blocks: int | None, rate: float | None) -> float | None:
    """Seconds left at ``rate``: 0 when done, None when it cannot be told."""
    if total_blocks is None:
        return None
    left = total_blocks - done_blocks
    if left <= 0:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return left / rate


def format_rate(rate: float | None) -> str:
    if rate is None:
        return "-"
    return f"{rate:,.0f} blk/s" if rate >= 10 else f"{rate:.1f} blk/s"


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds == 0:
        return "done"
    s = max(1, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_progress(done_blocks: int, total_blocks: int | None) -> str:
    if total_blocks is None:
        return f"{done_blocks:,}/?"
    pct = 100.0 if total_blocks == 0 else min(100.0, 100.0 * done_blocks / total_blocks)
    return f"{done_blocks:,}/{total_blocks:,} ({pct:.0f}%)"
