"""Blocks per second and time left per stream (pure logic), and the progress view: redrawn
in place on a terminal, printed only on a change of status elsewhere."""

from __future__ import annotations

import io

from trace_platform.core.sync_progress import (
    RateMeter,
    eta_seconds,
    format_eta,
    format_progress,
    format_rate,
    target_blocks,
)
from trace_platform.gen.trace.v1 import chain_sync_pb2 as pb
from trace_platform.views.live_status import ProgressView, stream_rows


def test_rate_needs_two_samples_a_span_apart_and_uses_the_window() -> None:
    meter = RateMeter(window_seconds=10, min_span=1)
    assert meter.rate("s") is None
    meter.observe("s", 0.0, 0)
    meter.observe("s", 0.5, 400)
    assert meter.rate("s") is None  # one fast poll claims no speed
    meter.observe("s", 2.0, 1000)
    assert meter.rate("s") == 500
    for t in range(3, 30):  # then steady at 100 blocks/s: the old burst leaves the window
        meter.observe("s", float(t), 1000 + 100 * (t - 2))
    assert abs((meter.rate("s") or 0) - 100) < 1e-9


def test_a_stalled_stream_reports_zero_and_a_reset_count_starts_over() -> None:
    meter = RateMeter(window_seconds=5, min_span=1)
    for t in range(6):
        meter.observe("s", float(t), 50 * t)
    for t in range(6, 20):
        meter.observe("s", float(t), 250)
    assert meter.rate("s") == 0
    assert eta_seconds(250, 500, meter.rate("s")) is None  # no estimate without movement
    meter.observe("s", 20.0, 10)  # the job was re-applied: counts went back
    assert meter.rate("s") is None


def test_targets_estimates_and_formats() -> None:
    assert target_blocks(100, 1100, None) == 1000
    assert target_blocks(100, None, 599) == 500  # following the head: up to it, inclusive
    assert target_blocks(0, None, None) is None
    assert eta_seconds(400, 1000, 50.0) == 12.0
    assert eta_seconds(1000, 1000, None) == 0.0
    assert eta_seconds(10, None, 5.0) is None
    assert [format_eta(s) for s in (None, 0.0, 0.4, 12.0, 125.0, 7500.0)] == [
        "-",
        "done",
        "1s",
        "12s",
        "2m05s",
        "2h05m",
    ]
    assert [format_rate(r) for r in (None, 2.345, 1234.4)] == ["-", "2.3 blk/s", "1,234 blk/s"]
    assert format_progress(250, 1000) == "250/1,000 (25%)"
    assert format_progress(7, None) == "7/?"


def job(done: int, completed: bool = False, in_flight: int = 1) -> pb.ChainSyncStatus:
    return pb.ChainSyncStatus(
        job_id="j1",
        name="mini",
        chain_id=31337,
        mode="fixed_target",
        from_block=0,
        to_block=1000,
        completed=completed,
        streams=[
            pb.ChainSyncStreamStatus(
                dataset_key="blocks",
                dataset_name="mini.blocks",
                completed_blocks=done,
                completed_ranges=done // 100,
                in_flight=in_flight,
                synced_to=done,
                planned_to=done + 100,
                cursor=done + 100,
            )
        ],
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rows_carry_rate_and_time_left_per_stream() -> None:
    meter = RateMeter(min_span=1)
    stream_rows([job(0)], meter, 0.0)
    (row,) = stream_rows([job(200)], meter, 2.0)
    assert (row["stream"], row["progress"], row["rate"], row["eta"]) == (
        "mini.blocks",
        "200/1,000 (20%)",
        "100 blk/s",
        "8s",
    )
    (done,) = stream_rows([job(1000, completed=True, in_flight=0)], meter, 3.0)
    assert (done["state"], done["eta"]) == ("complete", "done")


def test_not_a_terminal_prints_only_when_the_status_changes() -> None:
    out, clock = io.StringIO(), Clock()
    view = ProgressView(out, tty=False, clock=clock)
    with view:
        assert view.update([job(0)])
        for t in range(1, 5):  # the same status polled again: rates move, nothing is printed
            clock.now = float(t)
            assert not view.update([job(0)])
        clock.now = 5.0
        assert view.update([job(500)])
        clock.now = 6.0
        assert not view.update([job(500)])
    text = out.getvalue()
    assert "\x1b[" not in text  # no control codes in a log
    assert text.count("mini.blocks") == 4  # two prints: the status line and the progress line each
    assert "500/1,000 (50%)" in text and "100 blk/s" in text and "eta 5s" in text


def test_a_terminal_gets_one_table_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    with ProgressView(out, tty=True, clock=clock) as view:
        for t in range(6):
            clock.now = float(t)
            view.update([job(100 * t)])
    text = out.getvalue()
    assert "Stream" in text and "ETA" in text and "blk/s" in text
    # Each redraw erases the previous table line by line, moving the cursor up over it,
    # instead of printing a new table below the old one.
    assert text.count("\x1b[2K\x1b[1A") >= 5 * 6
    assert "500/1,000 (50%)" in text and "100 blk/s" in text
