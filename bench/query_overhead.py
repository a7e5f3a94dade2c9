"""Query Service overhead vs plain DuckDB on the same Parquet files, in the same run.

Two queries over >= 1M rows: a point lookup by block number (a different block each
time, so no cache of the SQL text helps) and a full-scan aggregate. The Query Service
runs in its own process (`trace dispatcher serve`, which also serves QueryService) and
is called through TaskQuery with a real capability token; plain DuckDB runs in this
process with `read_parquet` over the same files. Calls alternate between the two so
drift on a shared 2-core machine hits both alike.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import uvloop
from bench_support import drop_db, dsn_for, fresh_db, start_dispatcher

from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, object_prefix
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2

ORG = "00000000-0000-0000-0000-0000000000be"
POINT = "SELECT block_number, gas_used, miner, tx_count FROM {rel} WHERE block_number = {n}"
SCAN = "SELECT miner, count(*) AS blocks, sum(gas_used) AS gas FROM {rel} GROUP BY miner ORDER BY gas DESC LIMIT 10"


def write_files(root: Path, rows: int, files: int) -> tuple[str, str, Path, list[Path]]:
    ds_uuid, version = str(uuid.uuid4()), str(uuid.uuid4())
    prefix = root / object_prefix(ds_uuid, version)
    prefix.mkdir(parents=True)
    per = rows // files
    objects, paths = [], []
    for i in range(files):
        start = i * per
        nums = pa.array(range(start, start + per), pa.int64())
        table = pa.table(
            {
                "block_number": nums,
                "gas_used": pa.array([(n * 7919) % 30_000_000 for n in range(start, start + per)], pa.int64()),
                "miner": pa.array([f"0x{n % 211:040x}" for n in range(start, start + per)]),
                "tx_count": pa.array([n % 300 for n in range(start, start + per)], pa.int32()),
            }
        )
        path = prefix / f"blocks_{start}_{start + per}.parquet"
        pq.write_table(table, path, row_group_size=65_536)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        objects.append(ManifestObject(path.name, path.stat().st_size, digest, per))
        paths.append(path)
    (prefix / MANIFEST_NAME).write_bytes(build_manifest(ds_uuid, version, objects).to_json())
    return ds_uuid, version, prefix, paths


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_048_576)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--point-iterations", type=int, default=300)
    parser.add_argument("--scan-iterations", type=int, default=30)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="trace-qbench-"))
    objects = tmp / "objects"
    ds_uuid, version, prefix, paths = write_files(objects, args.rows, args.files)
    db = await fresh_db("trace_qbench")
    admin_token, worker_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {
        "TRACE_DATABASE_URL": dsn_for(db),
        "TRACE_ADMIN_TOKEN": admin_token,
        "TRACE_WORKER_TOKEN": worker_token,
        "TRACE_DATA_DIR": str(tmp),
        "TRACE_QUERY_FILE_ROOTS": str(objects),
        "TRACE_LOG_LEVEL": "WARNING",
    }
    proc, addr = start_dispatcher(env)
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            dispatcher = DispatcherClient(channel, worker_token=worker_token, admin_token=admin_token)
            ref = common_pb2.StorageRef(scheme="file", prefix=str(prefix) + "/", glob="*.parquet")
            grant = common_pb2.DatasetGrant(dataset_uuid=ds_uuid, dataset_version=version, storage_ref=ref)
            spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop", datasets=[grant])
            task_id = (await dispatcher.create_tasks([spec]))[0]
            claimed = (await dispatcher.claim(task_id, "bench")).claimed
            client = QueryClient(channel)

            async def via_trace(sql: str) -> list[list[object]]:
                out = await client.task_query(claimed.capability_token, task_id, claimed.attempt, ds_uuid, sql)
                return out.rows

            plain = duckdb.connect(config={"threads": 2})
            files_sql = "read_parquet([" + ", ".join(f"'{p}'" for p in paths) + "])"

            def via_duckdb(sql: str) -> list[tuple[object, ...]]:
                return plain.execute(sql).fetchall()

            results = {}
            rng = random.Random(7)
            for name, template, iterations in (
                ("point", POINT, args.point_iterations),
                ("scan", SCAN, args.scan_iterations),
            ):
                trace_ms: list[float] = []
                duck_ms: list[float] = []
                for i in range(iterations + 5):
                    n = rng.randrange(args.rows)
                    t0 = time.perf_counter()
                    a = await via_trace(template.format(rel="dataset", n=n))
                    t1 = time.perf_counter()
                    b = via_duckdb(template.format(rel=files_sql, n=n))
                    t2 = time.perf_counter()
                    assert [list(r) for r in b] == a, ("results differ", a[:2], b[:2])
                    if i >= 5:  # warm-up: attach, footers, page cache
                        trace_ms.append((t1 - t0) * 1000)
                        duck_ms.append((t2 - t1) * 1000)
                results[name] = (trace_ms, duck_ms)
    finally:
        proc.terminate()
        proc.wait(10)
        await drop_db(db)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"rows={args.rows} files={args.files} (Parquet, 64k-row groups); Trace = TaskQuery over gRPC")
    heads = ("trace p50", "trace p95", "duckdb p50", "duckdb p95", "p50 ratio", "p50 overhead")
    print(f"{'query':6} " + " ".join(f"{h:>12}" for h in heads))
    for name, (t, d) in results.items():
        t50, t95, d50, d95 = percentile(t, 0.5), percentile(t, 0.95), percentile(d, 0.5), percentile(d, 0.95)
        cells = (
            f"{t50:.2f}ms",
            f"{t95:.2f}ms",
            f"{d50:.2f}ms",
            f"{d95:.2f}ms",
            f"{t50 / d50:.2f}",
            f"{t50 - d50:.2f}ms",
        )
        print(f"{name:6} " + " ".join(f"{c:>12}" for c in cells))
    point_t, point_d = results["point"]
    scan_t, scan_d = results["scan"]
    overhead = statistics.median(point_t) - statistics.median(point_d)
    ratio = statistics.median(scan_t) / statistics.median(scan_d)
    print(
        f"targets: point p50 overhead <= 3 ms: {overhead:.2f} ms ({'met' if overhead <= 3 else 'MISSED'}); "
        f"scan p50 ratio <= 1.15: {ratio:.2f} ({'met' if ratio <= 1.15 else 'MISSED'})"
    )


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the `trace` commands run on
