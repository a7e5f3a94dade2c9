"""Range planning: examples, fail-closed head handling, and properties over simulated runs."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trace_platform.core.chain_sync import FixedTarget, FollowHead
from trace_platform.core.planner import (
    BlockRange,
    HeadObservation,
    PlanStatus,
    eligible_end,
    is_complete,
    job_complete,
    plan_stream,
)

FOLLOW = FollowHead(from_block=0, tail_lag=2, head_poll_interval_seconds=1, max_head_age_seconds=10)
NOW = 1_000_000.0
TIP = HeadObservation(head_block=10**9, observed_at=NOW)  # a chain far beyond every fixed target here


def test_fixed_target_tops_up_to_max_inflight() -> None:
    plan = plan_stream(cursor=0, in_flight=1, chunk_size=100, max_inflight=3, mode=FixedTarget(0, 1000), head=TIP)
    assert plan.ranges == (BlockRange(0, 100), BlockRange(100, 200))
    assert (plan.next_cursor, plan.status, plan.eligible_end) == (200, PlanStatus.PLANNED, 1000)


def test_last_range_is_clipped_to_target() -> None:
    plan = plan_stream(cursor=950, in_flight=0, chunk_size=100, max_inflight=5, mode=FixedTarget(0, 1000), head=TIP)
    assert plan.ranges == (BlockRange(950, 1000),)
    assert plan.next_cursor == 1000


def test_window_full_plans_nothing() -> None:
    plan = plan_stream(cursor=0, in_flight=3, chunk_size=10, max_inflight=3, mode=FixedTarget(0, 100), head=TIP)
    assert (plan.ranges, plan.next_cursor, plan.status) == ((), 0, PlanStatus.WINDOW_FULL)
    lowered = plan_stream(cursor=0, in_flight=9, chunk_size=10, max_inflight=3, mode=FixedTarget(0, 100), head=TIP)
    assert lowered.ranges == () and lowered.status is PlanStatus.WINDOW_FULL


def test_fixed_target_drains_then_completes() -> None:
    draining = plan_stream(cursor=100, in_flight=2, chunk_size=10, max_inflight=3, mode=FixedTarget(0, 100), head=TIP)
    assert (draining.ranges, draining.status) == ((), PlanStatus.DRAINING)
    done = plan_stream(cursor=100, in_flight=0, chunk_size=10, max_inflight=3, mode=FixedTarget(0, 100), head=TIP)
    assert (done.ranges, done.status, done.next_cursor) == ((), PlanStatus.COMPLETE, 100)
    assert is_complete(FixedTarget(0, 100), 100, 0) and not is_complete(FixedTarget(0, 100), 100, 1)
    assert job_complete(FixedTarget(0, 100), [(100, 0), (100, 0)])
    assert not job_complete(FixedTarget(0, 100), [(100, 0), (90, 0)])
    assert not job_complete(FixedTarget(0, 100), [])
    assert not job_complete(FOLLOW, [(100, 0)])


def test_fixed_target_beyond_the_head_waits_for_the_chain() -> None:
    """to_block 100 on a chain whose head is 34: plan [0, 35), then wait; never fail."""
    mode = FixedTarget(0, 100)
    short = HeadObservation(head_block=34, observed_at=NOW)
    plan = plan_stream(cursor=0, in_flight=0, chunk_size=20, max_inflight=5, mode=mode, head=short, now=NOW)
    assert plan.ranges == (BlockRange(0, 20), BlockRange(20, 35))
    assert (plan.next_cursor, plan.status, plan.eligible_end) == (35, PlanStatus.PLANNED, 35)
    waiting = plan_stream(cursor=35, in_flight=0, chunk_size=20, max_inflight=5, mode=mode, head=short, now=NOW)
    assert (waiting.ranges, waiting.status, waiting.next_cursor) == ((), PlanStatus.CAUGHT_UP, 35)
    assert not is_complete(mode, 35, 0)
    # The chain gets there: the rest is planned, clipped to to_block, and the stream completes.
    tall = HeadObservation(head_block=500, observed_at=NOW)
    rest = plan_stream(cursor=35, in_flight=0, chunk_size=40, max_inflight=5, mode=mode, head=tall, now=NOW)
    assert rest.ranges == (BlockRange(35, 75), BlockRange(75, 100)) and rest.next_cursor == 100
    done = plan_stream(cursor=100, in_flight=0, chunk_size=40, max_inflight=5, mode=mode, head=None, now=NOW)
    assert done.status is PlanStatus.COMPLETE  # all planned: no head needed to know that


def test_fixed_target_plans_nothing_without_a_head_but_takes_an_old_one() -> None:
    mode = FixedTarget(0, 100)
    missing = plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=2, mode=mode, head=None, now=NOW)
    assert (missing.ranges, missing.status, missing.eligible_end) == ((), PlanStatus.HEAD_MISSING, None)
    old = HeadObservation(head_block=14, observed_at=NOW - 86_400)  # the chain never gets shorter
    plan = plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=2, mode=mode, head=old, now=NOW)
    assert plan.ranges == (BlockRange(0, 10), BlockRange(10, 15))
    below = HeadObservation(head_block=3, observed_at=NOW)
    late = FixedTarget(50, 100)
    assert eligible_end(late, below, NOW) == (50, None)
    assert plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=2, mode=late, head=below).ranges == ()


def test_cursor_below_from_block_starts_at_from_block() -> None:
    plan = plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=1, mode=FixedTarget(50, 100), head=TIP)
    assert plan.ranges == (BlockRange(50, 60),)


def test_follow_head_uses_head_plus_one_minus_tail_lag() -> None:
    head = HeadObservation(head_block=24, observed_at=NOW - 1)
    plan = plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=5, mode=FOLLOW, head=head, now=NOW)
    # blocks 0..24 exist; two behind the tip -> [0, 23)
    assert plan.ranges == (BlockRange(0, 10), BlockRange(10, 20), BlockRange(20, 23))
    assert plan.eligible_end == 23
    caught_up = plan_stream(cursor=23, in_flight=0, chunk_size=10, max_inflight=5, mode=FOLLOW, head=head, now=NOW)
    assert (caught_up.ranges, caught_up.status, caught_up.next_cursor) == ((), PlanStatus.CAUGHT_UP, 23)


def test_follow_head_never_goes_below_from_block() -> None:
    mode = FollowHead(from_block=100, tail_lag=64, head_poll_interval_seconds=1, max_head_age_seconds=10)
    assert eligible_end(mode, HeadObservation(10, NOW), NOW) == (100, None)


@pytest.mark.parametrize(
    "head, status",
    [
        (None, PlanStatus.HEAD_MISSING),
        (HeadObservation(-1, NOW), PlanStatus.HEAD_MISSING),
        (HeadObservation(1000, NOW - 10.5), PlanStatus.HEAD_STALE),
        (HeadObservation(1000, NOW + 60), PlanStatus.HEAD_STALE),  # from the future: not trusted either
    ],
)
def test_follow_head_fails_closed(head: HeadObservation | None, status: PlanStatus) -> None:
    plan = plan_stream(cursor=5, in_flight=0, chunk_size=10, max_inflight=5, mode=FOLLOW, head=head, now=NOW)
    assert (plan.ranges, plan.next_cursor, plan.status, plan.eligible_end) == ((), 5, status, None)


def test_head_exactly_at_max_age_is_still_fresh() -> None:
    head = HeadObservation(1000, NOW - 10)
    assert plan_stream(cursor=0, in_flight=0, chunk_size=10, max_inflight=1, mode=FOLLOW, head=head, now=NOW).ranges


def test_bad_inputs_raise() -> None:
    for kwargs in ({"chunk_size": 0}, {"max_inflight": 0}, {"cursor": -1}, {"in_flight": -1}):
        args = {"cursor": 0, "in_flight": 0, "chunk_size": 1, "max_inflight": 1, **kwargs}
        with pytest.raises(ValueError):
            plan_stream(mode=FixedTarget(0, 10), head=TIP, **args)
    with pytest.raises(ValueError):
        BlockRange(5, 5)


# --- properties -------------------------------------------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> tuple[FixedTarget | FollowHead, int, int, list[tuple[int, int, bool]]]:
    """A mode, chunk_size, max_inflight and a schedule of (completions, head, fresh) steps."""
    start = draw(st.integers(0, 500))
    if draw(st.booleans()):
        mode: FixedTarget | FollowHead = FixedTarget(start, start + draw(st.integers(1, 2_000)))
    else:
        mode = FollowHead(start, draw(st.integers(0, 50)), 1, 10)
    steps = draw(st.lists(st.tuples(st.integers(0, 5), st.integers(-1, 3_000), st.booleans()), min_size=1, max_size=40))
    return mode, draw(st.integers(1, 300)), draw(st.integers(1, 8)), steps


@settings(max_examples=300, deadline=None)
@given(runs())
def test_simulated_runs_keep_the_invariants(
    run: tuple[FixedTarget | FollowHead, int, int, list[tuple[int, int, bool]]],
) -> None:
    mode, chunk_size, max_inflight, steps = run
    cursor = 0
    in_flight: list[BlockRange] = []
    scheduled: list[BlockRange] = []
    best_head = -1
    for completions, head_block, fresh in steps:
        del in_flight[:completions]  # oldest first; order does not matter to the planner
        best_head = max(best_head, head_block)  # heads only move forward in this model
        head = HeadObservation(best_head, NOW if fresh else NOW - 11)
        plan = plan_stream(
            cursor=cursor,
            in_flight=len(in_flight),
            chunk_size=chunk_size,
            max_inflight=max_inflight,
            mode=mode,
            head=head,
            now=NOW,
        )
        if isinstance(mode, FixedTarget) and cursor < mode.to_block and best_head < 0:
            assert plan.ranges == () and plan.status is PlanStatus.HEAD_MISSING  # waits for a head
            continue
        if isinstance(mode, FixedTarget):
            limit = min(mode.to_block, max(mode.from_block, best_head + 1))  # never beyond the chain
        elif not fresh or best_head < 0:
            assert plan.ranges == () and plan.next_cursor == cursor  # fail closed
            continue
        else:
            limit = max(mode.from_block, best_head + 1 - mode.tail_lag)
        assert plan.next_cursor >= cursor  # monotonic
        expected_start = max(cursor, mode.from_block)
        for r in plan.ranges:
            assert r.start == expected_start  # contiguous with the cursor and each other
            assert r.start < r.end <= r.start + chunk_size  # end-exclusive, bounded by chunk_size
            assert r.end <= limit  # never beyond the target or head - tail_lag
            expected_start = r.end
        if plan.ranges:
            assert plan.next_cursor == plan.ranges[-1].end
        in_flight.extend(plan.ranges)
        scheduled.extend(plan.ranges)
        assert len(in_flight) <= max_inflight
        cursor = plan.next_cursor
        if plan.status is PlanStatus.COMPLETE:
            assert isinstance(mode, FixedTarget) and cursor == mode.to_block and not in_flight
    # Everything scheduled is one gap-free, overlap-free run starting at from_block.
    assert all(a.end == b.start for a, b in pairwise(scheduled))
    if scheduled:
        assert scheduled[0].start == mode.from_block and scheduled[-1].end == cursor


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 10_000), st.integers(1, 500), st.integers(1, 16))
def test_fixed_target_run_to_completion_covers_the_range_exactly(
    start: int, length: int, chunk_size: int, max_inflight: int
) -> None:
    mode = FixedTarget(start, start + length)
    cursor, covered = start, 0
    for _ in range(length + 2):
        plan = plan_stream(
            cursor=cursor, in_flight=0, chunk_size=chunk_size, max_inflight=max_inflight, mode=mode, head=TIP
        )
        if plan.status is PlanStatus.COMPLETE:
            break
        covered += sum(len(r) for r in plan.ranges)
        assert len(plan.ranges) <= max_inflight
        cursor = plan.next_cursor
    assert plan.status is PlanStatus.COMPLETE
    assert covered == length and cursor == mode.to_block
