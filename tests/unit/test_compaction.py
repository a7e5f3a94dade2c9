"""Which ranges compaction merges (core/compaction.py), the compact task config, and the
spec's optional ``compaction`` section (absent: yaml_hash unchanged)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.compaction import CompactConfig, CompactInput, compactable_below, compaction_runs
from trace_platform.core.errors import FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class R:
    range_start: int
    range_end: int


def spans(runs: list[list[R]]) -> list[tuple[int, int, int]]:
    return [(run[0].range_start, run[-1].range_end, len(run)) for run in runs]


def tiles(start: int, end: int, step: int) -> list[R]:
    return [R(s, min(s + step, end)) for s in range(start, end, step)]


def test_only_finished_buckets_are_merged() -> None:
    ranges = tiles(0, 50, 5)  # buckets of 20: [0,20) and [20,40) are followed, [40,50) is not
    assert spans(compaction_runs(ranges, 20, 0, None)) == [(0, 20, 4), (20, 40, 4)]
    # A finished stream: its last partial bucket too.
    assert spans(compaction_runs(ranges, 20, 0, 50)) == [(0, 20, 4), (20, 40, 4), (40, 50, 2)]


def test_a_gap_keeps_its_bucket_whole() -> None:
    ranges = [r for r in tiles(0, 60, 5) if r.range_start != 25]  # [25,30) not published yet
    assert spans(compaction_runs(ranges, 20, 0, None)) == [(0, 20, 4)]
    # Nothing can start between the bucket's floor and a first range that starts later.
    late = [r for r in tiles(0, 60, 5) if r.range_start not in (20,)]
    assert (20, 40, 3) not in spans(compaction_runs(late, 20, 0, None))


def test_a_merged_bucket_is_never_merged_again() -> None:
    ranges = [R(0, 20), R(20, 40), *tiles(40, 60, 5)]
    assert spans(compaction_runs(ranges, 20, 0, 60)) == [(40, 60, 4)]
    assert compaction_runs([R(0, 20), R(20, 40), R(40, 60)], 20, 0, 60) == []


def test_chunks_that_do_not_divide_the_target_and_an_unaligned_start() -> None:
    ranges = tiles(7, 40, 3)  # from_block 7: [7,10) is its bucket's only range
    assert spans(compaction_runs(ranges, 10, 7, None)) == [(10, 22, 4), (22, 31, 3)]
    assert spans(compaction_runs(ranges, 10, 7, 40)) == [(10, 22, 4), (22, 31, 3), (31, 40, 3)]


def test_the_reorg_window_of_an_unfinished_job_is_left_alone() -> None:
    assert compactable_below(1000, False, 64) == 1000 - 129
    assert compactable_below(1000, True, 64) == 1000


def test_the_config_must_tile_its_range() -> None:
    v = str(uuid.uuid4())
    good = CompactConfig(v, v, "h", 0, 4, (CompactInput(0, 2, v), CompactInput(2, 4, v)))
    assert CompactConfig.from_dict(good.to_dict()) == good
    for inputs in ([[0, 2, v], [3, 4, v]], [[0, 2, v]], [], [[0, 2, "x"], [2, 4, v]]):
        with pytest.raises(FailedPrecondition) as exc:
            CompactConfig.from_dict({**good.to_dict(), "inputs": inputs})
        assert exc.value.reason == "COMPACT_CONFIG_INVALID"


BASE = """
kind: chain_sync
name: j
chain_id: 1
mode: {kind: fixed_target, from_block: 0, to_block: 100}
streams:
  blocks: {cryo_dataset_name: blocks, rpc_pool: p, chunk_size: 10, max_inflight: 1}
"""


def test_the_compaction_section_is_optional_and_hashed_only_when_present() -> None:
    plain = parse_chain_sync(BASE)
    assert plain.compaction is None
    assert "compaction" not in plain.canonical()
    with_it = parse_chain_sync(BASE + "compaction: {target_blocks: 1000}\n")
    assert with_it.compaction is not None and with_it.compaction.target_blocks == 1000
    assert with_it.yaml_hash != plain.yaml_hash
    for bad, reason in (("{target_blocks: 1}", "OUT_OF_RANGE"), ("{}", "MISSING_FIELD"), ("{x: 1}", "UNKNOWN_KEY")):
        with pytest.raises(InvalidArgument) as exc:
            parse_chain_sync(BASE + f"compaction: {bad}\n")
        assert exc.value.reason == reason
