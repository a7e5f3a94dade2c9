"""Reorg detection for chain_sync: where the published chain and the node's diverge.

Pure: recorded blocks (hash and, when known, parent hash, per block number, read from the
published blocks stream) and node blocks (hash and parent hash per number; None when the
node has no such block) come in; the lowest block that no longer belongs to the node's
canonical chain goes out, or the fork point once the walk back found the common ancestor.

Invariants: a recorded block is canonical only if its hash equals the node's at its
number; a range is linked to what precedes it only if its first block's parent hash is
the recorded hash of the block before it. A reorg's depth is the count of published blocks
it replaces (tip - fork + 1); beyond the job's ``mode.max_reorg_depth`` (core.chain_sync) nothing is repaired
(``REORG_TOO_DEEP``), since a repair would have to guess how far back to go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trace_platform.core.chain_verify import NodeBlock, hex0x

REORG_TOO_DEEP = "REORG_TOO_DEEP"


@dataclass(frozen=True)
class RecordedBlock:
    block_number: int
    block_hash: bytes
    parent_hash: bytes | None


def _same(recorded: bytes, node_hash: str) -> bool:
    return hex0x(recorded) == hex0x(node_hash)


def first_divergence(
    checked: Iterable[int],
    recorded: Mapping[int, RecordedBlock],
    node: Mapping[int, NodeBlock | None],
) -> int | None:
    """The lowest checked block whose recorded hash is not the node's, or whose recorded
    predecessor is not its parent (then the predecessor is where it diverges)."""
    out: int | None = None
    for n in sorted(set(checked)):
        mine = recorded.get(n)
        if mine is None:
            continue
        theirs = node.get(n)
        bad: int | None = None
        if theirs is None or not _same(mine.block_hash, theirs.hash):
            bad = n
        else:
            before = recorded.get(n - 1)
            parent = mine.parent_hash if mine.parent_hash is not None else None
            if before is not None and not _same(before.block_hash, theirs.parent_hash):
                bad = n - 1  # the node's block n builds on another n - 1 than ours
            elif before is not None and parent is not None and parent != before.block_hash:
                bad = n - 1  # our own data is not linked (two forks inside one range)
        if bad is not None and (out is None or bad < out):
            out = bad
    return out


def fork_point(
    below: int,
    floor: int,
    recorded: Mapping[int, RecordedBlock],
    node: Mapping[int, NodeBlock | None],
) -> int | None:
    """Walking down from ``below - 1`` to ``floor``: the first block past the highest one
    that still matches the node (the first replaced block). None when every block down to
    ``floor`` differs (the walk must go further, or the reorg is too deep)."""
    for n in range(below - 1, floor - 1, -1):
        mine = recorded.get(n)
        theirs = node.get(n)
        if mine is not None and theirs is not None and _same(mine.block_hash, theirs.hash):
            return n + 1
    return None


def reorg_depth(fork: int, tip: int) -> int:
    """Published blocks replaced: ``fork`` .. ``tip`` inclusive."""
    return tip - fork + 1
