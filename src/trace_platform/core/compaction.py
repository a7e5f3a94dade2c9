"""Which finished ranges of a stream to merge. Pure logic, no I/O.

Ranges are grouped into buckets of ``target_blocks`` by where they start
(``start // target_blocks``), so a bucket is merged once and its merged range is never
merged again (it is then the bucket's only range). A bucket is merged only when it is
finished: no range not yet published (or not yet planned) could still start inside it,
that is its ranges are contiguous, nothing can start between the bucket's floor and its
first range, and the next published range starts where its last one ends (or the
stream is finished there). So a merge never leaves out a block a later range brings.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from trace_platform.core.errors import FailedPrecondition


class _Range(Protocol):
    @property
    def range_start(self) -> int: ...

    @property
    def range_end(self) -> int: ...


R = TypeVar("R", bound=_Range)

MAX_INPUTS = 5_000  # ranges per merge: bounds the task config and the worker's memory


def compactable_below(published_end: int, completed: bool, max_reorg_depth: int) -> int:
    """Ranges ending at or below this may be merged. An unfinished job's last
    ``2 x max_reorg_depth`` blocks (and one more: the reorg watcher keeps hashes from the
    tip minus that) stay as they are, since a reorg repair may still re-extract them; a
    completed job is no longer watched, so all of it may be merged."""
    return published_end if completed else published_end - 2 * max_reorg_depth - 1


def compaction_runs(
    ranges: Sequence[R], target_blocks: int, from_block: int, finished_end: int | None
) -> list[list[R]]:
    """Runs of ``ranges`` (completed, ascending, non-overlapping) to merge, each at least
    two ranges of one finished bucket. ``finished_end``: the stream's end when nothing
    more will ever be published (a completed job), else None."""
    buckets: list[list[R]] = []
    for r in ranges:
        if buckets and buckets[-1][0].range_start // target_blocks == r.range_start // target_blocks:
            buckets[-1].append(r)
        else:
            buckets.append([r])
    runs = []
    for i, b in enumerate(buckets):
        if len(b) < 2 or len(b) > MAX_INPUTS:
            continue
        contiguous = all(x.range_end == y.range_start for x, y in itertools.pairwise(b))
        floor = max(from_block, (b[0].range_start // target_blocks) * target_blocks)
        prev_end = buckets[i - 1][-1].range_end if i > 0 else None
        left = b[0].range_start == floor or prev_end == b[0].range_start
        nxt = buckets[i + 1][0].range_start if i + 1 < len(buckets) else None
        right = nxt == b[-1].range_end or (finished_end is not None and b[-1].range_end == finished_end)
        if contiguous and left and right:
            runs.append(b)
    return runs


@dataclass(frozen=True)
class CompactInput:
    range_start: int
    range_end: int
    dataset_version: str


@dataclass(frozen=True)
class CompactConfig:
    dataset_uuid: str
    dataset_version: str  # the output
    config_hash: str
    range_start: int
    range_end: int
    inputs: tuple[CompactInput, ...]  # adjacent, ascending, tiling [range_start, range_end)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_uuid": self.dataset_uuid,
            "dataset_version": self.dataset_version,
            "config_hash": self.config_hash,
            "range_start": self.range_start,
            "range_end": self.range_end,
            "inputs": [[i.range_start, i.range_end, i.dataset_version] for i in self.inputs],
        }

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CompactConfig:
        try:
            inputs = tuple(CompactInput(int(s), int(e), str(uuid.UUID(str(v)))) for s, e, v in raw["inputs"])
            config = CompactConfig(
                dataset_uuid=str(uuid.UUID(str(raw["dataset_uuid"]))),
                dataset_version=str(uuid.UUID(str(raw["dataset_version"]))),
                config_hash=str(raw["config_hash"]),
                range_start=int(raw["range_start"]),
                range_end=int(raw["range_end"]),
                inputs=inputs,
            )
        except (KeyError, TypeError, ValueError):
            raise FailedPrecondition(
                "COMPACT_CONFIG_INVALID", "malformed compact task config", category="config"
            ) from None
        edges = [config.range_start] + [i.range_end for i in inputs]
        if not inputs or [i.range_start for i in inputs] != edges[:-1] or edges[-1] != config.range_end:
            raise FailedPrecondition("COMPACT_CONFIG_INVALID", "inputs do not tile the range", category="config")
        return config
