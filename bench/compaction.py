"""Compaction: queries over a stream of many small ranges, before and after compaction.

Full stack in this process (Dispatcher with the compaction planner and collector, worker
running the compact operator, Query Service) against a fresh PostgreSQL database. A
fixed_target chain_sync job with a blocks stream is applied (its RPC pool points nowhere,
so the planner extracts nothing); ``--ranges`` synthetic two-block ranges are then
registered as real versions the way a cryo_ingest completion does (a ledger row, its
task with the declared output, Parquet + manifest at the version's own prefix, the
version row and the task's completion in one transaction: the completion trigger marks
the range). Then, with ``--iterations`` timed calls each (after warm-up), a ``count(*)``
and a point lookup (a different block each time) through the Query Service (public API,
user token), and the same SQL in plain DuckDB (one connection, ``read_parquet`` over the
files) in the same run. Compaction is then switched on (``compaction: {target_blocks}``),
the run waits for the cutover and measures again, and once more after the collector has
deleted the replaced versions (run with no grace: the steady state of a compacted
stream). Ratios are Trace / plain DuckDB; the target is that Trace after compaction is
within 1.5 x plain DuckDB over the compacted files. Each measurement also times, in the
same run and over the same files, the bare gRPC floor (``grpc_floor_server.py``: a
grpc.aio server running the SQL on plain DuckDB, no token, gate or audit): the least any
gRPC query service pays. ``--layout separate`` queries a ``trace serve query`` process
instead of the in-process Query Service.

    .venv/bin/python bench/compaction.py [--ranges 1000] [--iterations 40] [--layout lite|separate]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import io
import json
import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import duckdb
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import uvloop
from bench_support import drop_db, dsn_for, fresh_db, start_roles
from grpc_floor_server import floor_channel

from trace_platform.adapters.objectstore.factory import datasets_uri, object_stores
from trace_platform.adapters.postgres.compaction_repository import CompactionRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, register_version
from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.app import start_platform
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import (
    DispatcherSettings,
    QuerySettings,
    Settings,
    TokenSettings,
    UserAuthSettings,
    WorkerSettings,
)
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, derive_dataset_version
from trace_platform.core.models import DatasetPublication, StorageRef
from trace_platform.core.publication import output_prefix
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.servers.chain_sync.compaction import RetiredCollector

ORG = "00000000-0000-4000-8000-0000000000c1"
BLOCKS_PER_RANGE = 2
COUNT = "SELECT count(*) FROM {rel}"
POINT = "SELECT block_number, block_hash, gas_used FROM {rel} WHERE block_number = {n}"
GAP_SECONDS = 0.005


def job(blocks: int, target: int | None) -> str:
    extra = f"compaction: {{target_blocks: {target}}}\n" if target else ""
    return (
        "kind: chain_sync\nname: bench\nchain_id: 31337\n"
        f"mode: {{kind: fixed_target, from_block: 0, to_block: {blocks}}}\n"
        "streams:\n  blocks: {cryo_dataset_name: blocks, rpc_pool: nowhere, chunk_size: 2, max_inflight: 4}\n" + extra
    )


def _settings(db: str, tmp: Path) -> Settings:
    return Settings(
        database_url=dsn_for(db),
        listen="127.0.0.1:0",
        data_dir=tmp,
        worker_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        scratch_uri=f"file://{tmp}/scratch",
        db_pool_min=1,
        db_pool_max=8,
        tokens=TokenSettings(key_dir=tmp / "keys", ttl_seconds=300),
        dispatcher=DispatcherSettings(head_observer_interval_seconds=0.2),
        worker=WorkerSettings(worker_id="bench-worker", concurrency=2),
        query=QuerySettings(slots=2, memory_limit="512MB", threads=2),
        user_auth=UserAuthSettings(issuer="trace-bench", hs256_secret=secrets.token_urlsafe(32)),
        # A port nothing listens on: the head observer records nothing, nothing is extracted.
        rpc_pools={"nowhere": "http://127.0.0.1:9"},
    )


def _table(start: int, end: int) -> pa.Table:
    nums = list(range(start, end))
    return pa.table(
        {
            "block_number": pa.array(nums, pa.uint32()),
            "block_hash": pa.array([hashlib.sha256(str(n).encode()).digest() for n in nums], pa.binary()),
            "timestamp": pa.array([1_700_000_000 + 12 * n for n in nums], pa.uint32()),
            "gas_used": pa.array([(n * 7919) % 30_000_000 for n in nums], pa.uint64()),
            "chain_id": pa.array([31337] * len(nums), pa.uint64()),
        }
    )


def _write_range(prefix: str, ds_uuid: str, version: str, start: int, end: int) -> None:
    """One range's Parquet object (Cryo's file name) and its manifest, written last."""
    buf = io.BytesIO()
    pq.write_table(_table(start, end), buf)
    data = buf.getvalue()
    name = f"ethereum__blocks__{start:08d}_to_{end - 1:08d}.parquet"
    path = Path(prefix.removeprefix("file://"))
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_bytes(data)
    obj = ManifestObject(name, len(data), hashlib.sha256(data).hexdigest(), end - start)
    (path / MANIFEST_NAME).write_bytes(build_manifest(ds_uuid, version, [obj]).to_json())


async def _register_ranges(settings: Settings, ranges: int) -> None:
    """Each range as a cryo_ingest completion registers it: objects, version, completion."""
    base = datasets_uri(settings)
    pool = await create_pool(settings.database_url or "", min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            job_id, ds_uuid = await conn.fetchrow(
                "SELECT job_id, dataset_uuid::text FROM chain_sync_streams WHERE dataset_key = 'blocks'"
            )
            config_hash = "cryo_ingest.blocks:v1"
            for i in range(ranges):
                start, end = i * BLOCKS_PER_RANGE, (i + 1) * BLOCKS_PER_RANGE
                version = derive_dataset_version(ds_uuid, start, end, config_hash)
                prefix = output_prefix(base, ds_uuid, version)
                _write_range(prefix, ds_uuid, version, start, end)
                task_id = uuid.uuid4()
                declared = [
                    {"dataset_uuid": ds_uuid, "dataset_version": version, "config_hash": config_hash,
                     "range_start": start, "range_end": end}
                ]  # fmt: skip
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt,"
                        " max_attempts, declared_outputs)"
                        " VALUES ($1, $2, 'cryo_ingest', '{}', '[]', '[]', 'running', 1, 1, $3::jsonb)",
                        task_id,
                        uuid.UUID(ORG),
                        json.dumps(declared),
                    )
                    await conn.execute(
                        "INSERT INTO chain_sync_ranges (job_id, dataset_key, range_start, range_end, task_id)"
                        " VALUES ($1, 'blocks', $2, $3, $4)",
                        job_id,
                        start,
                        end,
                        task_id,
                    )
                async with conn.transaction():  # the completion transaction
                    ref = StorageRef(scheme="file", prefix=prefix.removeprefix("file://"), glob="*.parquet")
                    await register_version(
                        conn, DatasetPublication(ds_uuid, version, ref, config_hash, start, end), str(task_id)
                    )
                    await conn.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task_id)
            total = ranges * BLOCKS_PER_RANGE
            await conn.execute("UPDATE chain_sync_streams SET next_block = $1 WHERE job_id = $2", total, job_id)
            await conn.execute("UPDATE chain_sync_jobs SET completed_at = now() WHERE id = $1", job_id)
    finally:
        await pool.close()


async def _measure(
    user: ApiQueryClient, files: list[str], blocks: int, iterations: int, seed: int
) -> dict[str, dict[str, float]]:
    """Trace, the bare gRPC floor and plain DuckDB, interleaved, over the same files."""
    plain = duckdb.connect(config={"threads": 2})
    rel = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    rng = random.Random(seed)
    out: dict[str, dict[str, float]] = {}
    async with floor_channel([Path(f) for f in files]) as floor_ch:
        floor = QueryClient(floor_ch)
        for name, template in (("count", COUNT), ("point", POINT)):
            times: dict[str, list[float]] = {"trace": [], "floor": [], "duckdb": []}
            for i in range(iterations + 5):
                n = rng.randrange(blocks)
                sql = template.format(rel="dataset", n=n)
                await asyncio.sleep(GAP_SECONDS)
                t0 = time.perf_counter()
                got = (await user.query("bench.blocks", sql)).rows
                t1 = time.perf_counter()
                await asyncio.sleep(GAP_SECONDS)
                t2 = time.perf_counter()
                floor_rows = (await floor.task_query("", "", 1, "", sql)).rows
                t3 = time.perf_counter()
                await asyncio.sleep(GAP_SECONDS)
                t4 = time.perf_counter()
                want = plain.execute(template.format(rel=rel, n=n)).fetchall()
                t5 = time.perf_counter()
                rows = [[[_plain(v) for v in r] for r in side] for side in (got, floor_rows, want)]
                assert rows[0] == rows[1] == rows[2], "answers differ"
                if i >= 5:  # warm-up: attach, footers, page cache
                    times["trace"].append((t1 - t0) * 1000)
                    times["floor"].append((t3 - t2) * 1000)
                    times["duckdb"].append((t5 - t4) * 1000)
            t, f, d = (statistics.median(times[side]) for side in ("trace", "floor", "duckdb"))
            out[name] = {
                "trace_p50_ms": round(t, 3),
                "floor_p50_ms": round(f, 3),
                "duckdb_p50_ms": round(d, 3),
                "ratio": round(t / d, 2),
                "floor_ratio": round(f / d, 2),
                "trace_over_floor": round(t / f, 2),
            }
    plain.close()
    return out


async def _resolve_ms(pool: asyncpg.Pool) -> float:
    """What resolving the dataset's versions costs after the cutover (the old version rows
    stay until collected)."""
    repo = DatasetRepository(pool)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        await repo.resolve_published(ORG, "bench.blocks")
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 3)


def _plain(v: object) -> object:
    return bytes(v) if isinstance(v, bytes | bytearray | memoryview) else int(v) if isinstance(v, int) else v


def _query_role_env(settings: Settings, dispatcher_addr: str) -> dict[str, str]:
    """`trace serve query` with this run's database, objects, user auth and query limits."""
    assert settings.database_url and settings.user_auth.hs256_secret
    return {
        "TRACE_DATABASE_URL": settings.database_url,
        "TRACE_DATA_DIR": str(settings.data_dir),
        "TRACE_ADMIN_TOKEN": settings.admin_token or "",
        "TRACE_WORKER_TOKEN": settings.worker_token or "",
        "TRACE_DISPATCHER_ADDR": dispatcher_addr,
        "TRACE_USER_AUTH_ISSUER": settings.user_auth.issuer,
        "TRACE_USER_AUTH_HS256_SECRET": settings.user_auth.hs256_secret,
        "TRACE_QUERY_SLOTS": str(settings.query.slots),
        "TRACE_QUERY_MEMORY_LIMIT": settings.query.memory_limit,
        "TRACE_QUERY_THREADS": str(settings.query.threads),
        "TRACE_LOG_LEVEL": "WARNING",
    }


async def run(ranges: int, iterations: int, layout: str) -> dict[str, object]:
    db = await fresh_db("trace_bench_compaction")
    tmp = Path(tempfile.mkdtemp(prefix="trace-bench-compaction-"))
    settings = _settings(db, tmp)
    running = await start_platform(settings, migrate=False, run_worker=True)
    query_proc = None
    query_addr = running.addr
    if layout == "separate":  # the cluster profile's Query Service, alone in its process
        query_proc, query_addr = start_roles(["query"], _query_role_env(settings, running.addr))
    blocks = ranges * BLOCKS_PER_RANGE
    try:
        pool = await create_pool(dsn_for(db), min_size=1, max_size=1)
        try:
            await IdentityRepository(pool).ensure_member(ORG, "bench-org", "ada", "viewer")
        finally:
            await pool.close()
        assert settings.user_auth.hs256_secret and settings.admin_token
        token = issue_user_token(settings.user_auth.hs256_secret, issuer="trace-bench", subject="ada", org_id=ORG)
        async with (
            grpc.aio.insecure_channel(running.addr) as ch,
            grpc.aio.insecure_channel(query_addr) as query_ch,
        ):
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            user = ApiQueryClient(query_ch, token=token)
            await admin.apply(ORG, job(blocks, None))
            t0 = time.monotonic()
            await _register_ranges(settings, ranges)
            register_s = time.monotonic() - t0
            objects = str(tmp / "objects")
            small = sorted(glob.glob(f"{objects}/datasets/*/*/ethereum__blocks__*.parquet"))
            assert len(small) == ranges
            before = await _measure(user, small, blocks, iterations, 1)
            t0 = time.monotonic()
            await admin.apply(ORG, job(blocks, blocks))
            pool = await create_pool(dsn_for(db), min_size=1, max_size=1)
            try:
                while not await pool.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'cut_over'"):
                    if time.monotonic() - t0 > 300:
                        raise TimeoutError("no cutover")
                    await asyncio.sleep(0.05)
                ledger = await pool.fetchval("SELECT count(*) FROM chain_sync_ranges")
                resolve_ms = await _resolve_ms(pool)
            finally:
                await pool.close()
            compact_s = time.monotonic() - t0
            merged = sorted(glob.glob(f"{objects}/datasets/*/*/compacted.parquet"))
            assert len(merged) == 1 and ledger == 1
            after = await _measure(user, merged, blocks, iterations, 2)
            # The same answers over the original small files, for the issue's "before" ratio.
            after_vs_small = await _measure(user, small, blocks, max(10, iterations // 4), 3)
            # Past the grace (the longest query timeout): the collector deletes the replaced
            # objects and version rows; the steady state of a compacted stream.
            pool = await create_pool(dsn_for(db), min_size=1, max_size=1)
            try:
                repo = CompactionRepository(pool)
                collector = RetiredCollector(repo, object_stores(settings), datasets_uri(settings), 0)
                collected = 0
                while done := await collector.step():
                    collected += done
                resolve_collected_ms = await _resolve_ms(pool)
            finally:
                await pool.close()
            collected_after = await _measure(user, merged, blocks, iterations, 4)
    finally:
        if query_proc is not None:
            query_proc.terminate()
            query_proc.wait(10)
        await running.stop(grace=0.5)
        await drop_db(db)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "ranges": ranges,
        "layout": layout,
        "blocks": blocks,
        "register_s": round(register_s, 2),
        "apply_to_cutover_s": round(compact_s, 2),
        "resolve_published_after_ms": resolve_ms,
        "before_compaction_vs_duckdb_over_the_small_files": before,
        "after_compaction_vs_duckdb_over_the_compacted_file": after,
        "after_compaction_vs_duckdb_over_the_small_files": after_vs_small,
        "versions_collected": collected,
        "resolve_published_after_collection_ms": resolve_collected_ms,
        "after_collection_vs_duckdb_over_the_compacted_file": collected_after,
        "target": "after_compaction ratio <= 1.5",
        "floor": "a bare grpc.aio server running the same SQL on plain DuckDB over the same files "
        "(grpc_floor_server.py): floor_ratio is what any gRPC query service pays at least",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument(
        "--layout",
        choices=("lite", "separate"),
        default="lite",
        help="lite: every role in this process (`trace lite up`); separate: the Query Service "
        "in its own `trace serve query` process, as the cluster profile runs it",
    )
    args = parser.parse_args()
    # The event loop the `trace` commands run on.
    print(json.dumps(uvloop.run(run(args.ranges, args.iterations, args.layout)), indent=2))


if __name__ == "__main__":
    main()
