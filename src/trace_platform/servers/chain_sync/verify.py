"""VerifyChainSync: read both sides of a job's integrity check and compare them.

The published side is exactly what a query of the stream would read: the versions the
trusted registry resolves (``DatasetRepository.resolve_published``), attached through the
Query Service's ``DatasetAttacher`` (manifest checked; each object's size must match it).
The node side comes from the job's RPC pool in JSON-RPC batches with bounded
concurrency; the pool's URL is never logged or put into an error (it may hold a key).
The work per call is bounded: at most ``MAX_VERIFY_BLOCKS`` blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trace_platform.adapters.duckdb.granted_fs import GrantedObject
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository, VerificationRecord
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.adapters.rpc.jsonrpc import RpcError, json_rpc, json_rpc_batch
from trace_platform.adapters.rpc.pool_proxy import PoolUrls
from trace_platform.core.chain_sync import ChainSyncSpec, StreamSpec, registry_name
from trace_platform.core.chain_verify import (
    MAX_DIFFERENCES_RECORDED,
    MAX_VERIFY_BLOCKS,
    VERIFIED_DATASETS,
    Difference,
    NodeBlock,
    PublishedBlock,
    PublishedStream,
    compare,
)
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, TraceError, Unavailable
from trace_platform.core.rpc_pools import RpcPool
from trace_platform.servers.query.attach import DatasetAttacher

log = logging.getLogger(__name__)
BATCH = 100  # blocks per JSON-RPC batch
JOBS_PER_STEP = 10  # scheduled checks per pass of the loop
CONCURRENCY = 4  # batches in flight per call


@dataclass(frozen=True)
class VerifyResult:
    from_block: int
    to_block: int
    differences: list[Difference]


class ChainVerifier:
    def __init__(
        self,
        jobs: ChainSyncRepository,
        datasets: DatasetRepository,
        attacher: DatasetAttacher,
        rpc_pools: Mapping[str, str | RpcPool],
        timeout: float = 30.0,
    ) -> None:
        self._jobs = jobs
        self._datasets = datasets
        self._attacher = attacher
        self._pools = PoolUrls(rpc_pools)  # a pool with limits: via the pool proxy
        self._timeout = timeout

    async def verify(
        self, org_id: str, name: str, lo: int | None, hi: int | None, last_blocks: int = MAX_VERIFY_BLOCKS
    ) -> VerifyResult:
        """``[lo, hi)``; unset ends: the last ``last_blocks`` of the published prefix."""
        spec = await self._jobs.job_spec(org_id, name)  # NOT_FOUND CHAIN_SYNC_NOT_FOUND
        checked = [s for s in spec.streams if s.cryo_dataset_name in VERIFIED_DATASETS]
        blocks = next((s for s in checked if s.cryo_dataset_name == "blocks"), None)
        if blocks is None:
            raise FailedPrecondition(
                "CHAIN_SYNC_NO_BLOCKS_STREAM", "verify needs a stream of the cryo dataset 'blocks' to compare hashes"
            )
        lo, hi = await self._range(org_id, spec, lo, hi, last_blocks)
        url = self._pools.get(blocks.rpc_pool)
        if not url:
            raise FailedPrecondition("RPC_POOL_UNKNOWN", f"rpc pool {blocks.rpc_pool!r} is not configured")
        published = [await self._published(org_id, spec, s, lo, hi) for s in checked]
        previous = await self._previous_hash(org_id, spec, blocks, lo)
        node, logs = await self._node(url, spec.chain_id, lo, hi, any(s.cryo_dataset_name == "logs" for s in checked))
        return VerifyResult(lo, hi, compare(lo, hi, published, node, logs, previous))

    async def _range(
        self, org_id: str, spec: ChainSyncSpec, lo: int | None, hi: int | None, last_blocks: int
    ) -> tuple[int, int]:
        if hi is None:
            status = await self._jobs.status(org_id, spec.name)
            streams = [s for _, rows, _ in status for s in rows] if status else []
            hi = min((int(s["synced_to"]) for s in streams), default=spec.mode.from_block)
            if lo is None and hi <= spec.mode.from_block:
                raise FailedPrecondition("NOTHING_PUBLISHED", "no block of the job is published yet")
        if lo is None:
            lo = max(spec.mode.from_block, hi - last_blocks)
        if lo < 0 or hi <= lo:
            raise InvalidArgument(
                "INVALID_BLOCK_RANGE",
                "to_block must be greater than from_block (end-exclusive), nothing published yet?",
            )
        if hi - lo > MAX_VERIFY_BLOCKS:
            raise InvalidArgument(
                "VERIFY_RANGE_TOO_LARGE",
                f"at most {MAX_VERIFY_BLOCKS} blocks per call; split the range",
                field="to_block",
            )
        return lo, hi

    async def _published(self, org_id: str, spec: ChainSyncSpec, s: StreamSpec, lo: int, hi: int) -> PublishedStream:
        out = PublishedStream(s.dataset_key, s.cryo_dataset_name)
        for (start, end), objects in await self._versions(org_id, spec, s, lo, hi):
            out.ranges.append((start, end))
            for obj in objects:
                table = await asyncio.to_thread(_read, obj, s.cryo_dataset_name == "blocks", lo, hi)
                numbers = table.column("block_number").to_pylist()
                if s.cryo_dataset_name == "blocks":
                    hashes = table.column("block_hash").to_pylist()
                    has_parents = "parent_hash" in table.column_names
                    parents = table.column("parent_hash").to_pylist() if has_parents else [None] * len(hashes)
                    out.blocks.extend(
                        PublishedBlock(int(n), bytes(h), None if p is None else bytes(p))
                        for n, h, p in zip(numbers, hashes, parents, strict=True)
                    )
                else:
                    out.rows_per_block.update(Counter(int(n) for n in numbers))
        return out

    async def _versions(
        self, org_id: str, spec: ChainSyncSpec, s: StreamSpec, lo: int, hi: int
    ) -> list[tuple[tuple[int, int], tuple[GrantedObject, ...]]]:
        resolved = await self._datasets.resolve_published(org_id, registry_name(spec.name, s.dataset_key))
        if resolved is None:
            return []
        out = []
        for (version, ref), (start, end) in zip(resolved.versions, resolved.ranges, strict=True):
            if start is None or end is None or end <= lo or start >= hi:
                continue
            attached = await self._attacher.attach(resolved.dataset_uuid, version, ref, None)  # trusted registry
            out.append(((start, end), attached.objects))
        return out

    async def _previous_hash(self, org_id: str, spec: ChainSyncSpec, blocks: StreamSpec, lo: int) -> bytes | None:
        """The published hash of block ``lo - 1``, for the parent link across the call's start."""
        if lo <= spec.mode.from_block:
            return None
        before = await self._published(org_id, spec, blocks, lo - 1, lo)
        return before.blocks[0].block_hash if len(before.blocks) == 1 else None

    async def _node(
        self, url: str, chain_id: int, lo: int, hi: int, with_logs: bool
    ) -> tuple[dict[int, NodeBlock | None], dict[int, int] | None]:
        try:
            served = int(str(await asyncio.to_thread(json_rpc, url, "eth_chainId", None, self._timeout)), 16)
        except (RpcError, ValueError):
            raise Unavailable("RPC_POOL_UNAVAILABLE", "the job's rpc pool did not answer") from None
        if served != chain_id:
            raise FailedPrecondition("RPC_POOL_WRONG_CHAIN", "the job's rpc pool serves another chain")
        gate = asyncio.Semaphore(CONCURRENCY)
        batches = [(start, min(start + BATCH, hi)) for start in range(lo, hi, BATCH)]
        parts = await asyncio.gather(*(self._batch(url, gate, a, b, with_logs) for a, b in batches))
        blocks: dict[int, NodeBlock | None] = {}
        logs: dict[int, int] | None = {} if with_logs else None
        for part_blocks, part_logs in parts:
            blocks.update(part_blocks)
            if logs is not None and part_logs is not None:
                for n, c in part_logs.items():
                    logs[n] = logs.get(n, 0) + c
        if logs is not None:
            for n, b in blocks.items():
                if b is not None:
                    logs.setdefault(n, 0)
        return blocks, logs

    async def _batch(
        self, url: str, gate: asyncio.Semaphore, a: int, b: int, with_logs: bool
    ) -> tuple[dict[int, NodeBlock | None], Counter[int] | None]:
        calls: list[tuple[str, list[object]]] = [("eth_getBlockByNumber", [hex(n), False]) for n in range(a, b)]
        if with_logs:
            calls.append(("eth_getLogs", [{"fromBlock": hex(a), "toBlock": hex(b - 1)}]))
        async with gate:
            try:
                results = await asyncio.to_thread(json_rpc_batch, url, calls, self._timeout)
            except RpcError:
                raise Unavailable("RPC_POOL_UNAVAILABLE", "the job's rpc pool failed a verify batch") from None
        try:
            blocks = {
                n: None if r is None else NodeBlock(str(r["hash"]), str(r["parentHash"]), len(r["transactions"]))
                for n, r in zip(range(a, b), results, strict=False)
            }
            logs = Counter(int(str(entry["blockNumber"]), 16) for entry in results[-1]) if with_logs else None
        except (KeyError, TypeError, ValueError):
            raise Unavailable("RPC_POOL_MALFORMED", "the job's rpc pool returned a malformed block") from None
        return blocks, logs


def _read(obj: GrantedObject, blocks: bool, lo: int, hi: int) -> pa.Table:
    """The rows of one published object in [lo, hi): block_number (and hashes for blocks)."""
    source = obj.filesystem.open_input_file(obj.path)
    try:
        if source.size() != obj.size:
            raise FailedPrecondition("OBJECT_SIZE_MISMATCH", "a published object's size differs from its manifest")
        data = source if isinstance(source, pa.NativeFile) else pa.BufferReader(source.read_at(obj.size, 0))
        parquet = pq.ParquetFile(data)
        # Cryo's default blocks columns carry no parent_hash; read it when it was published.
        wanted = ["block_number", "block_hash", "parent_hash"] if blocks else ["block_number"]
        columns = [c for c in wanted if c in parquet.schema_arrow.names]
        table = parquet.read(columns=columns)
    finally:
        source.close()
    numbers = table.column("block_number").cast(pa.int64())
    mask = pc.and_(pc.greater_equal(numbers, lo), pc.less(numbers, hi))
    return table.filter(mask)


class VerifyScheduler:
    """The `verify:` section as a Dispatcher loop: each due job is checked over its last
    ``last_blocks`` published blocks, and the outcome (or its reason code) replaces the
    job's latest check, which `trace status` shows."""

    def __init__(self, jobs: ChainSyncRepository, verifier: ChainVerifier) -> None:
        self._jobs = jobs
        self._verifier = verifier

    async def step(self) -> int:
        due = await self._jobs.verify_due(JOBS_PER_STEP)
        for job in due:
            try:
                result = await self._verifier.verify(job.org_id, job.name, None, None, job.last_blocks)
            except TraceError as exc:
                record = VerificationRecord(0, 0, error=exc.reason)
            except Exception:
                log.exception("scheduled chain_sync verify failed", extra={"job": job.name})
                record = VerificationRecord(0, 0, error="INTERNAL")
            else:
                record = VerificationRecord(
                    result.from_block,
                    result.to_block,
                    len(result.differences),
                    [asdict(d) for d in result.differences[:MAX_DIFFERENCES_RECORDED]],
                )
            await self._jobs.record_verification(job.job_id, record)
        return len(due)
