"""Query Service overhead vs plain DuckDB on the same Parquet files, in the same run.

Two queries over >= 1M rows: a point lookup by block number (a different block each
time, so no cache of the SQL text helps) and a full-scan aggregate. The Query Service
runs in its own process (`trace serve query`, the default) with the Dispatcher in another
(`trace serve dispatcher`), or with `--layout combined` beside every other role in one
`trace dispatcher serve`; it is called through TaskQuery with a real capability token; plain DuckDB runs in this
process with `read_parquet` over the same files. A third column is the floor
(`grpc_floor_server.py`): the same call to a bare grpc.aio server that runs the SQL on a
DuckDB thread with no checks at all, i.e. what this machine charges for the RPC and the
thread hop alone. Calls rotate between the three, each after the same short idle gap, so
drift on a shared 2-core machine hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench_support import drop_db, dsn_for, fresh_db, start_dispatcher, start_roles
from grpc_floor_server import floor_channel

from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, object_prefix
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2

ORG = "00000000-0000-0000-0000-0000000000be"
POINT = "SELECT block_number, gas_used, miner, tx_count FROM {rel} WHERE block_number = {n}"
SCAN = "SELECT miner, count(*) AS blocks, sum(gas_used) AS gas FROM {rel} GROUP BY miner ORDER BY gas DESC LIMIT 10"
GAP_SECONDS = 0.005  # idle time before each timed call, on both sides


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


async def keep_lease(dispatcher: DispatcherClient, ref: TaskRef, capability: list[str]) -> None:
    while True:
        await asyncio.sleep(5.0)
        renewed = await dispatcher.renew(ref, capability[0])
        if renewed.capability_token:
            capability[0] = renewed.capability_token


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_048_576)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--point-iterations", type=int, default=300)
    parser.add_argument("--scan-iterations", type=int, default=100)
    parser.add_argument(
        "--layout",
        choices=("separate", "combined"),
        default="separate",
        help="separate: `trace serve query` in its own process, `trace serve dispatcher` in another; "
        "combined: every role but the worker in one `trace dispatcher serve`",
    )
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
    procs = []
    try:
        if args.layout == "combined":
            proc, addr = start_dispatcher(env)
            procs.append(proc)
            query_addr = addr
        else:
            proc, addr = start_roles(["dispatcher"], env)
            procs.append(proc)
            # Its own process, verifying tokens with the Dispatcher's keys (GetTaskJwks).
            proc, query_addr = start_roles(["query"], {**env, "TRACE_DISPATCHER_ADDR": addr})
            procs.append(proc)
        async with (
            grpc.aio.insecure_channel(addr) as channel,
            grpc.aio.insecure_channel(query_addr) as query_channel,
        ):
            dispatcher = DispatcherClient(channel, worker_token=worker_token, admin_token=admin_token)
            ref = common_pb2.StorageRef(scheme="file", prefix=str(prefix) + "/", glob="*.parquet")
            grant = common_pb2.DatasetGrant(dataset_uuid=ds_uuid, dataset_version=version, storage_ref=ref)
            spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop", datasets=[grant])
            task_id = (await dispatcher.create_tasks([spec]))[0]
            claimed = (await dispatcher.claim(task_id, "bench")).claimed
            client = QueryClient(query_channel)
            # The attempt must stay running (the service refuses a token whose attempt is
            # not): heartbeat like a worker, keeping any renewed token. Off the timed calls
            # but beside them, once every few seconds.
            capability = [claimed.capability_token]
            keeper = asyncio.create_task(
                keep_lease(dispatcher, TaskRef(task_id, claimed.attempt, claimed.lease_token), capability)
            )

            async def via_trace(sql: str) -> list[list[object]]:
                out = await client.task_query(capability[0], task_id, claimed.attempt, ds_uuid, sql)
                return out.rows

            plain = duckdb.connect(config={"threads": 2})
            files_sql = "read_parquet([" + ", ".join(f"'{p}'" for p in paths) + "])"

            async def via_duckdb(sql: str) -> list[tuple[object, ...]]:
                return plain.execute(sql).fetchall()

            async with floor_channel(paths) as floor_ch:
                floor = QueryClient(floor_ch)

                async def via_floor(sql: str) -> list[list[object]]:
                    return (await floor.task_query("", task_id, 1, ds_uuid, sql)).rows

                results = {}
                rng = random.Random(7)
                for name, template, iterations in (
                    ("point", POINT, args.point_iterations),
                    ("scan", SCAN, args.scan_iterations),
                ):
                    timings: dict[str, list[float]] = {"trace": [], "floor": [], "duckdb": []}
                    for i in range(iterations + 5):
                        n = rng.randrange(args.rows)
                        sql = template.format(rel="dataset", n=n)
                        answers = {}
                        for side, run, text in (
                            ("trace", via_trace, sql),
                            ("floor", via_floor, sql),
                            ("duckdb", via_duckdb, template.format(rel=files_sql, n=n)),
                        ):
                            # Idle first, as every side is: the service also closes the previous
                            # query's audit row after answering, which must not land in the next timing.
                            await asyncio.sleep(GAP_SECONDS)
                            t0 = time.perf_counter()
                            answers[side] = [list(r) for r in await run(text)]
                            if i >= 5:  # warm-up: attach, footers, page cache
                                timings[side].append((time.perf_counter() - t0) * 1000)
                        assert answers["trace"] == answers["floor"] == answers["duckdb"], "results differ"
                    results[name] = timings
            keeper.cancel()
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(10)
        await drop_db(db)
        shutil.rmtree(tmp, ignore_errors=True)

    where = "its own process" if args.layout == "separate" else "one process with the other roles"
    print(f"rows={args.rows} files={args.files} (Parquet, 64k-row groups); Trace = TaskQuery over gRPC, {where}")
    heads = ("p50", "p95", "p50 ratio", "p50 overhead")
    print(f"{'query':6} {'side':7} " + " ".join(f"{h:>12}" for h in heads))
    for name, timings in results.items():
        base = statistics.median(timings["duckdb"])
        for side, xs in timings.items():
            p50, p95 = statistics.median(xs), percentile(xs, 0.95)
            cells = (f"{p50:.2f}ms", f"{p95:.2f}ms", f"{p50 / base:.2f}", f"{p50 - base:.2f}ms")
            print(f"{name:6} {side:7} " + " ".join(f"{c:>12}" for c in cells))
    p50 = {name: {side: statistics.median(xs) for side, xs in t.items()} for name, t in results.items()}
    over_floor = p50["point"]["trace"] - p50["point"]["floor"]
    scan_vs_floor = p50["scan"]["trace"] / p50["scan"]["floor"]
    print(
        f"targets (issue 12, against the floor measured in this run): point p50 trace - floor <= 1.0 ms: "
        f"{over_floor:.2f} ms ({'met' if over_floor <= 1.0 else 'MISSED'}); "
        f"scan p50 trace / floor <= 1.05: {scan_vs_floor:.3f} ({'met' if scan_vs_floor <= 1.05 else 'MISSED'})"
    )
    print(
        f"against plain DuckDB: point overhead trace {p50['point']['trace'] - p50['point']['duckdb']:.2f} ms, "
        f"floor {p50['point']['floor'] - p50['point']['duckdb']:.2f} ms; scan ratio trace "
        f"{p50['scan']['trace'] / p50['scan']['duckdb']:.2f}, floor {p50['scan']['floor'] / p50['scan']['duckdb']:.2f}"
    )


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the `trace` commands run on
