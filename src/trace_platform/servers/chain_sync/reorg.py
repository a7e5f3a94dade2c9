"""The reorg detector and repairer: a Dispatcher loop, run as often as heads are observed.

Each pass, per watched job (core/reorg.py says what diverged means):

1. Record the block hashes of every newly published range of the job's blocks stream
   (and of ranges a repair cut over), read from the published version itself, as queries
   read it (the verify machinery's attacher and Parquet reading).
2. Check continuity against the node: the published tip's hash, and for each new range its
   first block's link to the block before it, its last block, and every block of it within
   ``max_reorg_depth`` of the tip (older ones are past any reorg this job repairs).
3. When something diverged, walk back comparing node hashes with recorded ones to the fork
   point. Deeper than ``max_reorg_depth``: the job stops with REORG_TOO_DEEP. Otherwise,
   once no range at or below the tip is still being extracted, every stream's completed
   range past the fork is re-extracted by an ordinary cryo_ingest task (new versions, its
   declared outputs, the normal completion path); the last completion cuts them all over
   in its transaction and records the invalidations (migration 0014).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from trace_platform.adapters.duckdb.granted_fs import GrantedObject
from trace_platform.adapters.postgres.reorg_repository import AffectedRange, ReorgRepository, RepairTask, WatchedJob
from trace_platform.core.chain_sync import DEFAULT_MAX_REORG_DEPTH, ChainSyncSpec, FollowHead, spec_from_dict
from trace_platform.core.chain_verify import NodeBlock
from trace_platform.core.cryo_task import task_config
from trace_platform.core.errors import TraceError
from trace_platform.core.manifest import derive_dataset_version
from trace_platform.core.planner import BlockRange
from trace_platform.core.reorg import RecordedBlock, first_divergence, fork_point, reorg_depth
from trace_platform.servers.chain_sync.metrics import ChainSyncMetrics
from trace_platform.servers.chain_sync.verify import ChainVerifier, _read
from trace_platform.servers.query.attach import DatasetAttacher

log = logging.getLogger(__name__)
JOBS_PER_STEP = 50
RANGES_PER_STEP = 50  # newly published ranges recorded per job and pass
WALK_BATCH = 32  # blocks compared per step of the walk back


def max_reorg_depth(spec: ChainSyncSpec) -> int:
    return spec.mode.max_reorg_depth if isinstance(spec.mode, FollowHead) else DEFAULT_MAX_REORG_DEPTH


def repair_version(dataset_uuid: str, start: int, end: int, config_hash: str, reorg_id: int) -> str:
    """A repair's version differs from every earlier one of the range (the reorg id is in
    it) and is the same for every attempt of the repair task (retries rewrite it)."""
    return derive_dataset_version(dataset_uuid, start, end, f"{config_hash}+reorg:{reorg_id}")


def repair_tasks(spec: ChainSyncSpec, reorg_id: int, affected: list[AffectedRange]) -> list[RepairTask]:
    """One task per range and RPC pool, extracting every affected stream of that range."""
    groups: dict[tuple[int, int, str], list[AffectedRange]] = {}
    for a in affected:
        groups.setdefault((a.range_start, a.range_end, a.rpc_pool), []).append(a)
    tasks = []
    for (start, end, _), members in sorted(groups.items()):
        members.sort(key=lambda a: a.dataset_key)
        config = task_config(spec, tuple((a.dataset_key, a.dataset_uuid) for a in members), BlockRange(start, end))
        outputs = tuple(
            replace(o, dataset_version=repair_version(o.dataset_uuid, start, end, o.config_hash, reorg_id))
            for o in config.outputs
        )
        config = replace(config, outputs=outputs)
        by_key = {o.dataset_key: o.dataset_version for o in outputs}
        tasks.append(
            RepairTask(
                task_id=str(uuid.uuid4()),
                config=config.to_dict(),
                range_start=start,
                range_end=end,
                replaces=tuple((a, by_key[a.dataset_key]) for a in members),
            )
        )
    return tasks


class ReorgWatcher:
    def __init__(
        self,
        repo: ReorgRepository,
        verifier: ChainVerifier,
        attacher: DatasetAttacher,
        rpc_pools: Mapping[str, str],
        max_attempts: int,
        on_scheduled: Callable[[], None],
        metrics: ChainSyncMetrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._on_scheduled = on_scheduled  # wakes the outbox relay: the repair tasks' wake-ups
        self._repo = repo
        self._pools = rpc_pools  # never logged: URLs may hold keys
        self._verifier = verifier
        self._attacher = attacher
        self._max_attempts = max_attempts
        self._warned: set[str] = set()

    async def step(self) -> int:
        done = 0
        for job in await self._repo.watched_jobs(JOBS_PER_STEP):
            try:
                done += await self.check(job)
                self._warned.discard(job.job_id)
            except TraceError as exc:
                if job.job_id not in self._warned:  # once per outage; a reason code, never a URL
                    log.warning("reorg check could not run", extra={"job": job.name, "reason": exc.reason})
                    self._warned.add(job.job_id)
            except Exception:
                log.exception("reorg check failed", extra={"job": job.name})
        return done

    async def check(self, job: WatchedJob) -> int:
        """One pass over one job; returns 1 when it started a repair or stopped the job."""
        url = self._pools.get(job.rpc_pool)
        if not url:
            return 0
        spec = spec_from_dict(json.loads(job.spec_json))
        depth_max = max_reorg_depth(spec)
        keep = 2 * depth_max  # recorded blocks kept below the tip (the walk needs depth_max)
        before = await self._repo.recorded_tip(job.job_id)
        if before is None:  # nothing recorded yet (a new job, or one synced before 0014): start at the top
            end = await self._repo.published_end(job)
            before = None if end is None else end - 1
        new = await self._record(job, -1 if before is None else before - keep)
        tip = await self._repo.recorded_tip(job.job_id)
        if tip is None:
            return 0
        if tip - keep > spec.mode.from_block:
            await self._repo.prune_hashes(job.job_id, tip - keep)
        checked = {tip}
        for start, end in new:
            checked.update({start, end - 1})
            checked.update(range(max(start, tip - depth_max), end))
        checked = {n for n in checked if n >= tip - keep}  # below it: past any repairable reorg
        low = max(spec.mode.from_block, min(checked) - 1)
        recorded = await self._repo.recorded_between(job.job_id, low, tip + 1)
        node = await self._node(url, spec.chain_id, _runs(checked))
        diverged = first_divergence(checked, recorded, node)
        if diverged is None:
            return 0
        if node.get(tip) is None:
            # The node's chain is now shorter than what is published: the repair could not
            # extract the published tip. It runs once the node is back at that height
            # (the new chain's blocks differ there, so it is seen again then).
            return 0
        floor = max(spec.mode.from_block, tip - depth_max)
        fork = await self._walk_back(job, url, spec.chain_id, diverged, floor)
        if fork is None and floor == spec.mode.from_block:
            fork = spec.mode.from_block  # everything published differs, and that is within the limit
        if fork is None or reorg_depth(fork, tip) > depth_max:
            lowest = fork if fork is not None else floor
            log.error(
                "reorg deeper than max_reorg_depth: job stopped",
                extra={"job": job.name, "reason": "REORG_TOO_DEEP", "tip": tip, "max_reorg_depth": depth_max},
            )
            await self._repo.stop_too_deep(job.job_id, lowest, tip)
            if self._metrics is not None:
                self._metrics.reorgs.labels("too_deep").inc()
            return 1
        if await self._repo.unsettled(job.job_id, tip):
            return 0  # a range at or below the tip is still being extracted: repair it too, next pass
        started = await self._repo.start_repair(
            job.job_id,
            job.org_id,
            fork,
            tip,
            self._max_attempts,
            lambda reorg_id, affected: repair_tasks(spec, reorg_id, affected),
        )
        if started is None:
            return 0
        reorg_id, tasks = started
        self._on_scheduled()
        if self._metrics is not None:
            self._metrics.reorgs.labels("repairing").inc()
        log.warning(
            "reorg detected: repairing",
            extra={
                "job": job.name,
                "reorg_id": reorg_id,
                "fork_block": fork,
                "depth": reorg_depth(fork, tip),
                "tasks": len(tasks),
            },
        )
        return 1

    async def _record(self, job: WatchedJob, floor: int) -> list[tuple[int, int]]:
        """Record the hashes of newly published blocks ranges reaching past ``floor``;
        returns their ranges."""
        out = []
        for r in await self._repo.unrecorded_ranges(job, RANGES_PER_STEP, floor):
            attached = await self._attacher.attach(job.blocks_uuid, r.dataset_version, r.storage_ref, None)
            rows: list[RecordedBlock] = []
            for obj in attached.objects:
                rows.extend(await asyncio.to_thread(_recorded, obj, r.range_start, r.range_end))
            if rows:
                await self._repo.record_hashes(job.job_id, r.dataset_version, rows)
                out.append((r.range_start, r.range_end))
        return out

    async def _node(self, url: str, chain_id: int, runs: list[tuple[int, int]]) -> dict[int, NodeBlock | None]:
        """The node's blocks over end-exclusive runs, read as a verify call reads them."""
        out: dict[int, NodeBlock | None] = {}
        for lo, hi in runs:
            blocks, _ = await self._verifier._node(url, chain_id, lo, hi, False)
            out.update(blocks)
        return out

    async def _walk_back(self, job: WatchedJob, url: str, chain_id: int, diverged: int, floor: int) -> int | None:
        """The fork point at or below ``diverged``, looking no lower than ``floor``."""
        hi = diverged
        while hi > floor:
            lo = max(floor, hi - WALK_BATCH)
            node: dict[int, NodeBlock | None] = await self._node(url, chain_id, [(lo, hi)])
            recorded = await self._repo.recorded_between(job.job_id, lo, hi)
            fork = fork_point(hi, lo, recorded, node)
            if fork is not None:
                return fork
            hi = lo
        return None


def _recorded(obj: GrantedObject, lo: int, hi: int) -> list[RecordedBlock]:
    """The blocks rows of one published object in [lo, hi), read as verify reads them."""
    table = _read(obj, True, lo, hi)
    numbers = table.column("block_number").to_pylist()
    hashes = table.column("block_hash").to_pylist()
    parents = table.column("parent_hash").to_pylist() if "parent_hash" in table.column_names else [None] * len(hashes)
    return [
        RecordedBlock(int(n), bytes(h), None if p is None else bytes(p))
        for n, h, p in zip(numbers, hashes, parents, strict=True)
    ]


def _runs(numbers: set[int]) -> list[tuple[int, int]]:
    """Sorted block numbers as end-exclusive contiguous runs."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and runs[-1][1] == n:
            runs[-1] = (runs[-1][0], n + 1)
        else:
            runs.append((n, n + 1))
    return runs
