"""Compaction of chain_sync streams: two Dispatcher loops.

The planner merges runs of adjacent finished ranges of each stream whose job asks for it
(``compaction: {target_blocks: N}``; core/compaction.py picks the runs) by creating one
``compact`` task per run (workers/compact.py) with its one declared output version. The
compact task's completion cuts the ledger over in its own transaction (migration 0015):
the N ledger rows become one, so a query resolves either the N old versions or the new
one, never both or neither. A query that resolved before keeps its pinned versions.

Ranges within ``2 x max_reorg_depth`` of an unfinished job's published tip are never
merged (the reorg watcher may still repair them and records hashes there), and nothing
is planned while a repair is in progress.

The collector deletes the objects of versions the ledger no longer names, once they were
retired longer ago than any query can run (``grace_seconds``: the longest query timeout
plus a margin) and no open repair names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.compaction_repository import (
    CompactableStream,
    CompactionRepository,
    PlannedCompaction,
)
from trace_platform.core.chain_sync import DEFAULT_MAX_REORG_DEPTH, FollowHead, spec_from_dict
from trace_platform.core.compaction import CompactConfig, CompactInput, compactable_below, compaction_runs
from trace_platform.core.manifest import MANIFEST_NAME, derive_dataset_version
from trace_platform.core.publication import output_prefix

log = logging.getLogger(__name__)
STREAMS_PER_STEP = 200
CANDIDATES_PER_STREAM = 50_000
COLLECT_PER_STEP = 200


def compact_version(dataset_uuid: str, start: int, end: int, config_hash: str, task_id: str) -> str:
    """Differs from every version the range had (the task id is in it); the same for every
    attempt of the task (a retry rewrites it)."""
    return derive_dataset_version(dataset_uuid, start, end, f"{config_hash}+compact:{task_id}")


class CompactionPlanner:
    def __init__(self, repo: CompactionRepository, max_attempts: int, on_scheduled: Callable[[], None]) -> None:
        self._repo = repo
        self._max_attempts = max_attempts
        self._on_scheduled = on_scheduled  # wakes the outbox relay: the tasks' wake-ups

    async def step(self) -> int:
        created = 0
        for stream in await self._repo.compactable_streams(STREAMS_PER_STEP):
            try:
                created += await self.plan(stream)
            except Exception:
                log.exception("compaction planning failed", extra={"job": stream.name})
        if created:
            self._on_scheduled()
        return created

    async def plan(self, stream: CompactableStream) -> int:
        spec = spec_from_dict(json.loads(stream.spec_json))
        if spec.compaction is None or stream.published_end is None:
            return 0
        depth = spec.mode.max_reorg_depth if isinstance(spec.mode, FollowHead) else DEFAULT_MAX_REORG_DEPTH
        below = compactable_below(stream.published_end, stream.completed, depth)
        if below <= spec.mode.from_block:
            return 0
        ranges = await self._repo.candidates(stream, below, CANDIDATES_PER_STREAM)
        finished = stream.published_end if stream.completed else None
        runs = compaction_runs(ranges, spec.compaction.target_blocks, spec.mode.from_block, finished)
        if not runs:
            return 0
        config_hash = spec.stream(stream.dataset_key).config_hash
        planned = []
        for run in runs:
            task_id = str(uuid.uuid4())
            start, end = run[0].range_start, run[-1].range_end
            version = compact_version(stream.dataset_uuid, start, end, config_hash, task_id)
            config = CompactConfig(
                dataset_uuid=stream.dataset_uuid,
                dataset_version=version,
                config_hash=config_hash,
                range_start=start,
                range_end=end,
                inputs=tuple(CompactInput(r.range_start, r.range_end, r.dataset_version) for r in run),
            )
            planned.append(PlannedCompaction(task_id, config.to_dict(), version, config_hash, start, end, tuple(run)))
        created = await self._repo.create(stream, planned, self._max_attempts)
        if created:
            log.info("compaction planned", extra={"job": stream.name, "stream": stream.dataset_key, "runs": created})
        return created


class RetiredCollector:
    def __init__(
        self, repo: CompactionRepository, stores: ObjectStores, datasets_uri: str, grace_seconds: float
    ) -> None:
        self._repo = repo
        self._stores = stores
        self._datasets_uri = datasets_uri
        self._grace = grace_seconds

    async def step(self) -> int:
        done = 0
        for dataset_uuid, version in await self._repo.due_retired(self._grace, COLLECT_PER_STEP):
            try:
                await asyncio.to_thread(self._delete, dataset_uuid, version)
            except Exception:
                log.exception("retired version not collected", extra={"dataset_version": version})
                continue
            await self._repo.mark_collected(dataset_uuid, version)
            done += 1
        return done

    def _delete(self, dataset_uuid: str, version: str) -> None:
        prefix = output_prefix(self._datasets_uri, dataset_uuid, version)
        store = self._stores.for_uri(prefix)
        fs = store.arrow_filesystem()
        # The manifest first: a reader then finds no version rather than part of one.
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(store.arrow_path(prefix + MANIFEST_NAME))
        with contextlib.suppress(FileNotFoundError):
            fs.delete_dir(store.arrow_path(prefix).rstrip("/"))
