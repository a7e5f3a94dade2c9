"""core.chain_verify.compare: the differences the integrity check reports, from plain inputs
(the cases the anvil tests cannot make honestly: overlapping versions, two rows of a block,
a published parent_hash column, a block the node does not have)."""

from __future__ import annotations

from collections import Counter

from trace_platform.core.chain_verify import Difference, NodeBlock, PublishedBlock, PublishedStream, compare, hex0x


def h(n: int) -> bytes:
    return (n % 2**256).to_bytes(32, "big")


def chain(lo: int, hi: int, txs: int = 1) -> dict[int, NodeBlock | None]:
    return {n: NodeBlock(hex0x(h(n)), hex0x(h(n - 1)), txs) for n in range(lo, hi)}


def blocks(lo: int, hi: int, ranges: list[tuple[int, int]] | None = None, parents: bool = False) -> PublishedStream:
    s = PublishedStream("blocks", "blocks", ranges=ranges if ranges is not None else [(lo, hi)])
    s.blocks = [PublishedBlock(n, h(n), h(n - 1) if parents else None) for n in range(lo, hi)]
    return s


def test_clean_chain_has_no_difference_and_links_to_the_previous_call() -> None:
    assert compare(10, 20, [blocks(10, 20, parents=True)], chain(10, 20), None, h(9)) == []
    wrong_previous = compare(10, 20, [blocks(10, 20)], chain(10, 20), None, h(99))
    assert wrong_previous == [Difference(10, "blocks", "parent_link", hex0x(h(99)), hex0x(h(9)))]


def test_overlapping_versions_and_two_rows_are_duplicates() -> None:
    overlapping = blocks(0, 10, ranges=[(0, 6), (4, 10)])
    overlapping.blocks += [PublishedBlock(n, h(n), None) for n in (4, 5)]
    found = compare(0, 10, [overlapping], chain(0, 10), None, None)
    assert [(d.block_number, d.field) for d in found] == [(4, "duplicate"), (5, "duplicate")]
    twice = blocks(0, 3)
    twice.blocks.append(PublishedBlock(1, h(1), None))
    assert [(d.block_number, d.field, d.published) for d in compare(0, 3, [twice], chain(0, 3), None, None)] == [
        (1, "duplicate", "2 rows")
    ]


def test_published_parent_hash_column_is_compared_and_absent_node_block_is_reported() -> None:
    s = blocks(0, 3, parents=True)
    s.blocks[2] = PublishedBlock(2, h(2), h(77))
    node = chain(0, 3)
    node[3] = None
    s.ranges = [(0, 4)]
    s.blocks.append(PublishedBlock(3, h(3), h(2)))
    found = compare(0, 4, [s], node, None, None)
    assert found == [
        Difference(2, "blocks", "parent_hash", hex0x(h(77)), hex0x(h(1))),
        Difference(3, "blocks", "not_on_node", hex0x(h(3)), ""),
    ]


def test_counts_per_block_and_uncovered_blocks_of_count_streams() -> None:
    txs = PublishedStream("transactions", "transactions", ranges=[(0, 3)], rows_per_block=Counter({0: 1, 1: 2, 2: 1}))
    logs = PublishedStream("logs", "logs", ranges=[(0, 2)], rows_per_block=Counter({0: 1}))
    found = compare(0, 3, [blocks(0, 3), txs, logs], chain(0, 3), {0: 1, 1: 4, 2: 0}, None)
    assert found == [
        Difference(1, "logs", "log_count", "0", "4"),
        Difference(1, "transactions", "transaction_count", "2", "1"),
        Difference(2, "logs", "missing", "", ""),
    ]
