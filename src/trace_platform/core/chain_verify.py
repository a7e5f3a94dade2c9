"""The integrity check of a chain_sync job: what is published against what the node serves.

Pure: the published side (rows of the blocks stream, per-block row counts of the
transactions and logs streams, the block ranges of the versions read) and the node side
(hash, parent hash, transaction count per block, log counts) come in; every difference
goes out, lowest block first. Hashes are shown as ``0x`` lowercase hex, counts in decimal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from trace_platform.core.chain_sync import MAX_VERIFY_LAST_BLOCKS

MAX_VERIFY_BLOCKS = MAX_VERIFY_LAST_BLOCKS  # per call, whether asked for or scheduled
MAX_DIFFERENCES_SHOWN = 1_000
MAX_DIFFERENCES_RECORDED = 20  # per scheduled check, in chain_sync_verifications
VERIFIED_DATASETS = ("blocks", "transactions", "logs")  # the cryo datasets the check reads

# What differs (ChainSyncDifference.field).
BLOCK_HASH = "block_hash"
PARENT_HASH = "parent_hash"  # only when the stream publishes a parent_hash column
# The block published before it (across versions and the call's start) is not the block the
# node's block builds on: published = the published hash of n - 1, node = the node's parentHash.
# With a published parent_hash column, a published parent_hash that disagrees with the
# published previous hash always shows as this or as a parent_hash difference.
PARENT_LINK = "parent_link"
TRANSACTION_COUNT = "transaction_count"
LOG_COUNT = "log_count"
MISSING = "missing"  # the block is in no published version (or has no row in the blocks stream)
DUPLICATE = "duplicate"  # published more than once
NOT_ON_NODE = "not_on_node"  # published, but the node has no such block


def hex0x(value: bytes | str | None) -> str:
    """``0x`` lowercase hex of raw bytes or of a node's hex string; empty for None."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value.lower() if value.startswith(("0x", "0X")) else "0x" + value.lower()


@dataclass(frozen=True, order=True)
class Difference:
    block_number: int
    dataset_key: str
    field: str
    published: str = ""
    node: str = ""


@dataclass(frozen=True)
class NodeBlock:
    hash: str
    parent_hash: str
    transaction_count: int


@dataclass(frozen=True)
class PublishedBlock:
    block_number: int
    block_hash: bytes
    parent_hash: bytes | None  # None: the stream does not publish the column


@dataclass
class PublishedStream:
    """One stream's published side over the checked range."""

    dataset_key: str
    cryo_dataset_name: str
    # [start, end) of every version read (ranges overlapping the checked range).
    ranges: list[tuple[int, int]] = field(default_factory=list)
    blocks: list[PublishedBlock] = field(default_factory=list)  # blocks stream only
    rows_per_block: Counter[int] = field(default_factory=Counter)  # transactions / logs


def compare(
    lo: int,
    hi: int,
    streams: Sequence[PublishedStream],
    node: Mapping[int, NodeBlock | None],
    node_logs: Mapping[int, int] | None,
    previous_hash: bytes | None,
) -> list[Difference]:
    """Every difference over ``[lo, hi)``. ``previous_hash``: the published hash of block
    ``lo - 1`` (None when there is none to link to), so parent links are checked across the
    boundary of the call as they are across the boundaries of ranges and versions."""
    out: list[Difference] = []
    for s in streams:
        covered = _coverage(s.ranges, lo, hi)
        out.extend(_coverage_differences(s.dataset_key, covered, lo, hi))
        if s.cryo_dataset_name == "blocks":
            out.extend(_blocks(s, lo, hi, node, previous_hash, covered))
        elif s.cryo_dataset_name == "transactions":
            counts = {n: b.transaction_count for n, b in node.items() if b is not None}
            out.extend(_counts(s, lo, hi, counts, TRANSACTION_COUNT, covered))
        elif s.cryo_dataset_name == "logs" and node_logs is not None:
            out.extend(_counts(s, lo, hi, node_logs, LOG_COUNT, covered))
    return sorted(out)


def _coverage(ranges: Iterable[tuple[int, int]], lo: int, hi: int) -> Counter[int]:
    covered: Counter[int] = Counter()
    for start, end in ranges:
        covered.update(range(max(start, lo), min(end, hi)))
    return covered


def _coverage_differences(key: str, covered: Counter[int], lo: int, hi: int) -> Iterable[Difference]:
    for n in range(lo, hi):
        times = covered[n]
        if times == 0:
            yield Difference(n, key, MISSING, "", "")
        elif times > 1:
            yield Difference(n, key, DUPLICATE, f"{times} versions", "")


def _blocks(
    s: PublishedStream,
    lo: int,
    hi: int,
    node: Mapping[int, NodeBlock | None],
    previous_hash: bytes | None,
    covered: Counter[int],
) -> Iterable[Difference]:
    by_number: dict[int, list[PublishedBlock]] = {}
    for b in s.blocks:
        by_number.setdefault(b.block_number, []).append(b)
    prev = previous_hash
    for n in range(lo, hi):
        rows = by_number.get(n, [])
        if len(rows) > 1 and covered[n] <= 1:  # two rows in one version: not a coverage overlap
            yield Difference(n, s.dataset_key, DUPLICATE, f"{len(rows)} rows", "")
        if not rows:
            if covered[n] >= 1:  # a covered block without its row (an uncovered one is already missing)
                on_node = node.get(n)
                yield Difference(n, s.dataset_key, MISSING, "", hex0x(on_node.hash) if on_node else "")
            prev = None
            continue
        row = rows[0]
        want = node.get(n)
        before, prev = prev, row.block_hash
        if want is None:
            yield Difference(n, s.dataset_key, NOT_ON_NODE, hex0x(row.block_hash), "")
            continue
        if hex0x(row.block_hash) != hex0x(want.hash):
            yield Difference(n, s.dataset_key, BLOCK_HASH, hex0x(row.block_hash), hex0x(want.hash))
        if before is not None and hex0x(before) != hex0x(want.parent_hash):
            yield Difference(n, s.dataset_key, PARENT_LINK, hex0x(before), hex0x(want.parent_hash))
        if row.parent_hash is not None and hex0x(row.parent_hash) != hex0x(want.parent_hash):
            yield Difference(n, s.dataset_key, PARENT_HASH, hex0x(row.parent_hash), hex0x(want.parent_hash))


def _counts(
    s: PublishedStream, lo: int, hi: int, want: Mapping[int, int], what: str, covered: Counter[int]
) -> Iterable[Difference]:
    for n in range(lo, hi):
        if covered[n] == 0 or n not in want:  # missing is reported once, by coverage; absent on node by blocks
            continue
        got = s.rows_per_block.get(n, 0)
        if got != want[n]:
            yield Difference(n, s.dataset_key, what, str(got), str(want[n]))
