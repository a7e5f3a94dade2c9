"""core.reorg (where the published chain and the node's diverge) and the follow_head
``mode.max_reorg_depth`` setting."""

from __future__ import annotations

import pytest

from trace_platform.core.chain_sync import DEFAULT_MAX_REORG_DEPTH, FollowHead, parse_chain_sync
from trace_platform.core.chain_verify import NodeBlock
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.reorg import RecordedBlock, first_divergence, fork_point, reorg_depth
from trace_platform.servers.chain_sync.reorg import _runs, repair_version


def h(tag: str, n: int) -> bytes:
    return bytes([ord(tag)]) * 31 + bytes([(n + 1) % 256])


def chain(tag: str, lo: int, hi: int, fork_tag: str | None = None, fork: int | None = None) -> dict[int, NodeBlock]:
    """Node blocks lo..hi-1 of chain ``tag``, switching to ``fork_tag`` from ``fork`` on."""
    out = {}
    for n in range(lo, hi):
        t = fork_tag if fork is not None and fork_tag is not None and n >= fork else tag
        p = fork_tag if fork is not None and fork_tag is not None and n - 1 >= fork else tag
        out[n] = NodeBlock("0x" + h(t, n).hex(), "0x" + h(p, n - 1).hex(), 0)
    return out


def recorded(tag: str, lo: int, hi: int) -> dict[int, RecordedBlock]:
    return {n: RecordedBlock(n, h(tag, n), None) for n in range(lo, hi)}


def test_no_divergence_when_every_checked_block_matches() -> None:
    assert first_divergence(range(0, 10), recorded("a", 0, 10), chain("a", 0, 10)) is None


def test_a_replaced_tip_diverges_and_the_walk_finds_the_fork() -> None:
    ours = recorded("a", 0, 10)
    node = chain("a", 0, 10, "b", 7)  # blocks 7, 8, 9 replaced
    assert first_divergence({9}, ours, node) == 9
    assert fork_point(9, 0, ours, node) == 7
    assert reorg_depth(7, 9) == 3


def test_a_new_range_that_does_not_link_to_the_published_block_before_it() -> None:
    # Ours: 0..4 from chain a (published before the reorg), 5..9 from chain b (after it).
    ours = {**recorded("a", 0, 5), **recorded("b", 5, 10)}
    node = chain("a", 0, 10, "b", 3)  # the node forked at 3
    assert first_divergence({5, 9}, ours, node) == 4  # 5's parent is b's 4, not our 4
    assert fork_point(4, 0, ours, node) == 3


def test_unlinked_published_data_diverges_even_when_the_node_matches() -> None:
    ours = recorded("a", 0, 4)
    ours[3] = RecordedBlock(3, h("a", 3), h("z", 2))  # our own parent hash says another 2
    assert first_divergence({3}, ours, chain("a", 0, 4)) == 2


def test_a_block_the_node_no_longer_has_diverges() -> None:
    node: dict[int, NodeBlock | None] = {**chain("a", 0, 5), 5: None}
    assert first_divergence({5}, recorded("a", 0, 6), node) == 5


def test_no_fork_point_within_the_floor() -> None:
    ours = recorded("a", 0, 10)
    assert fork_point(9, 5, ours, chain("a", 0, 10, "b", 2)) is None


def test_runs_and_repair_versions() -> None:
    assert _runs({3, 4, 5, 9, 11, 12}) == [(3, 6), (9, 10), (11, 13)]
    uuid = "8d0a1f5e-3c7b-5e58-9a43-6b1c2f0d7e21"
    first, again, other = (repair_version(uuid, 0, 4, "c", r) for r in (1, 1, 2))
    assert first == again and first != other  # retries rewrite the same version, a new reorg does not


FOLLOW = """
kind: chain_sync
name: f
chain_id: 1
mode: {{kind: follow_head, from_block: 0, tail_lag: 0, head_poll_interval_seconds: 1,
        max_head_age_seconds: 5{extra}}}
streams:
  blocks: {{cryo_dataset_name: blocks, rpc_pool: p, chunk_size: 4, max_inflight: 1}}
"""


def test_max_reorg_depth_defaults_and_keeps_the_hash_of_documents_without_it() -> None:
    plain = parse_chain_sync(FOLLOW.format(extra=""))
    assert isinstance(plain.mode, FollowHead) and plain.mode.max_reorg_depth == DEFAULT_MAX_REORG_DEPTH
    assert "max_reorg_depth" not in plain.canonical()["mode"]
    explicit_default = parse_chain_sync(FOLLOW.format(extra=f", max_reorg_depth: {DEFAULT_MAX_REORG_DEPTH}"))
    assert explicit_default.yaml_hash == plain.yaml_hash
    eight = parse_chain_sync(FOLLOW.format(extra=", max_reorg_depth: 8"))
    assert isinstance(eight.mode, FollowHead) and eight.mode.max_reorg_depth == 8
    assert eight.canonical()["mode"]["max_reorg_depth"] == 8 and eight.yaml_hash != plain.yaml_hash


@pytest.mark.parametrize("bad", ["0", "10001", "'deep'"])
def test_max_reorg_depth_out_of_range_names_the_field(bad: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_chain_sync(FOLLOW.format(extra=f", max_reorg_depth: {bad}"))
    assert err.value.metadata["field"] == "mode.max_reorg_depth"
