"""Pure chain_sync range planning for one stream.

Given a stream's cursor (the exclusive high-water mark of what has been scheduled),
how many of its ranges are in flight, its chunk size and in-flight bound, and the
job's mode, ``plan_stream`` returns the end-exclusive ``[start, end)`` ranges to
schedule now and the cursor after scheduling them. The caller records the ranges,
their tasks and the new cursor in one transaction (the ledger's uniqueness makes a
replay harmless).

Nothing is ever planned beyond the chain: follow_head plans up to the observed head
minus ``tail_lag`` and fails closed with no head observation, or one older than
``max_head_age_seconds`` (or from the future by as much). fixed_target plans up to
``min(to_block, head + 1)`` and, with no head yet, nothing: a ``to_block`` beyond the
head waits for the chain (CAUGHT_UP) instead of handing Cryo blocks that do not exist,
which would fail those ranges for good. Any observation will do for fixed_target, however
old: the chain does not get shorter, so an old head is still a safe bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trace_platform.core.chain_sync import FixedTarget, FollowHead, Mode


class PlanStatus(str, Enum):
    PLANNED = "planned"  # ranges returned
    WINDOW_FULL = "window_full"  # max_inflight ranges already in flight
    CAUGHT_UP = "caught_up"  # cursor at the eligible end; waits for the head to move
    DRAINING = "draining"  # fixed_target: all scheduled, some still in flight
    COMPLETE = "complete"  # fixed_target: cursor reached to_block, nothing in flight
    HEAD_MISSING = "head_missing"  # no observation (fail closed)
    HEAD_STALE = "head_stale"  # follow_head: observation too old (fail closed)


@dataclass(frozen=True, order=True)
class BlockRange:
    """``[start, end)``: end-exclusive."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError("a block range needs 0 <= start < end")

    def __len__(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class HeadObservation:
    head_block: int  # the latest block number the node reported (inclusive)
    observed_at: float  # unix seconds


@dataclass(frozen=True)
class Plan:
    ranges: tuple[BlockRange, ...]
    next_cursor: int
    status: PlanStatus
    eligible_end: int | None  # exclusive end planning may reach now; None when the head is unusable


def eligible_end(mode: Mode, head: HeadObservation | None, now: float) -> tuple[int | None, PlanStatus | None]:
    """The exclusive end planning may reach, or ``None`` and why not."""
    if head is None or head.head_block < 0:
        return None, PlanStatus.HEAD_MISSING
    if isinstance(mode, FixedTarget):
        return max(mode.from_block, min(mode.to_block, head.head_block + 1)), None
    if abs(now - head.observed_at) > mode.max_head_age_seconds:
        return None, PlanStatus.HEAD_STALE
    return max(mode.from_block, head.head_block + 1 - mode.tail_lag), None


def plan_stream(
    *,
    cursor: int,
    in_flight: int,
    chunk_size: int,
    max_inflight: int,
    mode: Mode,
    head: HeadObservation | None = None,
    now: float = 0.0,
) -> Plan:
    """Top the stream's in-flight window up to ``max_inflight`` ranges of ``chunk_size`` blocks."""
    if chunk_size < 1 or max_inflight < 1:
        raise ValueError("chunk_size and max_inflight must be positive")
    if cursor < 0 or in_flight < 0:
        raise ValueError("cursor and in_flight must not be negative")
    start = max(cursor, mode.from_block)  # never backwards; a raised from_block skips ahead
    if isinstance(mode, FixedTarget) and start >= mode.to_block:  # all planned: no head needed
        done = PlanStatus.COMPLETE if in_flight == 0 else PlanStatus.DRAINING
        return Plan((), max(cursor, mode.to_block), done, mode.to_block)
    end, blocked = eligible_end(mode, head, now)
    if end is None:
        return Plan((), cursor, blocked or PlanStatus.HEAD_MISSING, None)
    ranges: list[BlockRange] = []
    while in_flight + len(ranges) < max_inflight and start < end:
        stop = min(start + chunk_size, end)
        ranges.append(BlockRange(start, stop))
        start = stop
    if ranges:
        status = PlanStatus.PLANNED
    elif start >= end:
        status = PlanStatus.CAUGHT_UP
    else:
        status = PlanStatus.WINDOW_FULL
    return Plan(tuple(ranges), ranges[-1].end if ranges else cursor, status, end)


def is_complete(mode: Mode, cursor: int, in_flight: int) -> bool:
    """fixed_target is complete for a stream when its cursor reached to_block with nothing in flight."""
    return isinstance(mode, FixedTarget) and cursor >= mode.to_block and in_flight == 0


def job_complete(mode: Mode, streams: list[tuple[int, int]]) -> bool:
    """A fixed_target job completes when every stream's ``(cursor, in_flight)`` is complete."""
    return not isinstance(mode, FollowHead) and bool(streams) and all(is_complete(mode, c, f) for c, f in streams)
