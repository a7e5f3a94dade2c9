"""Dispatcher end-to-end throughput vs PgQueuer, measured in the same run.

Every task goes the whole way: CreateTasks (batched) -> outbox row -> relay ->
wake-up queue -> ClaimTask -> Heartbeat -> CompleteTask -> ack. The Dispatcher runs
in its own process (`trace dispatcher serve`); the workers run here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import timedelta

import asyncpg
import grpc
import uvloop

from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2

ADMIN_DSN = os.environ.get("TRACE_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ORG = "00000000-0000-0000-0000-0000000000be"


def dsn_for(db: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + db


async def fresh_db(prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN_DSN)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return name


async def drop_db(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def trace_run(n: int, workers: int) -> float:
    db = await fresh_db("trace_bench")
    dsn = dsn_for(db)
    await migrate_dsn(dsn)
    tmp = tempfile.mkdtemp()
    admin, worker_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = dict(
        os.environ,
        TRACE_DATABASE_URL=dsn,
        TRACE_ADMIN_TOKEN=admin,
        TRACE_WORKER_TOKEN=worker_token,
        TRACE_DATA_DIR=tmp,
        TRACE_OUTBOX_INTERVAL_SECONDS="0.02",
        TRACE_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(  # noqa: ASYNC220 - one start-up call, outside the timed section
        [sys.executable, "-m", "trace_platform", "dispatcher", "serve", "--listen", "127.0.0.1:0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        addr = re.search(r"serving on (\S+)", line).group(1)  # type: ignore[union-attr]
        pool = await create_pool(dsn, min_size=4, max_size=workers + 4)  # as `trace worker run` makes it
        queue = PostgresQueue(pool)
        done = 0
        finished = asyncio.Event()
        async with grpc.aio.insecure_channel(addr) as channel:
            client = BatchingDispatcherClient(channel, admin_token=admin, worker_token=worker_token)

            async def produce() -> None:
                spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop")
                for i in range(0, n, 200):
                    await client.create_tasks([spec] * min(200, n - i))

            async def work(wid: int) -> None:
                nonlocal done
                while not finished.is_set():
                    msgs = await queue.receive("tasks", 8, 30)
                    if not msgs:
                        await queue.wait("tasks", 0.05)
                        continue
                    for m in msgs:
                        resp = await client.claim(m.payload["task_id"], f"bench-{wid}")
                        if resp.WhichOneof("result") == "claimed":
                            c = resp.claimed
                            ref = TaskRef(c.task.task_id, c.attempt, c.lease_token)
                            await client.heartbeat(ref, c.capability_token)
                            await client.complete(ref, c.capability_token)
                            done += 1
                    await queue.ack("tasks", msgs)
                    if done >= n:
                        finished.set()

            start = time.perf_counter()
            await asyncio.gather(produce(), *(work(i) for i in range(workers)))
            elapsed = time.perf_counter() - start
        completed = await pool.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        assert completed == n, f"only {completed} of {n} completed"
        await queue.close()
        await pool.close()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        await drop_db(db)


async def pgqueuer_run(n: int, workers: int) -> float:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    db = await fresh_db("pgq_bench")
    try:
        conn = await asyncpg.connect(dsn_for(db))
        driver = AsyncpgDriver(conn)
        await Queries(driver).install()
        pgq = PgQueuer(driver)
        done = 0

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal done
            done += 1
            if done >= n:
                pgq.shutdown.set()

        producer_conn = await asyncpg.connect(dsn_for(db))
        producer = Queries(AsyncpgDriver(producer_conn))
        start = time.perf_counter()

        async def produce() -> None:
            for i in range(0, n, 200):
                k = min(200, n - i)
                await producer.enqueue(["noop"] * k, [None] * k, [0] * k)

        # PgQueuer with its defaults (batch 10, unbounded concurrency), as its users run it.
        await asyncio.gather(produce(), pgq.run(dequeue_timeout=timedelta(seconds=0.05)))
        elapsed = time.perf_counter() - start
        await producer_conn.close()
        await conn.close()
        return elapsed
    finally:
        await drop_db(db)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()
    await trace_run(min(500, args.tasks), args.workers)  # warm-up
    trace_s = await trace_run(args.tasks, args.workers)
    pgq_s = await pgqueuer_run(args.tasks, args.workers)
    trace_rate, pgq_rate = args.tasks / trace_s, args.tasks / pgq_s
    print(f"tasks={args.tasks} workers={args.workers}")
    print(f"trace dispatcher (gRPC create+claim+heartbeat+complete): {trace_rate:8.0f} tasks/s  ({trace_s:.2f} s)")
    print(f"pgqueuer baseline (no-op jobs, same PostgreSQL):        {pgq_rate:8.0f} jobs/s   ({pgq_s:.2f} s)")
    print(
        f"ratio trace/pgqueuer: {trace_rate / pgq_rate:.2f}   target: >= 1000 tasks/s -> "
        f"{'met' if trace_rate >= 1000 else 'NOT met'}"
    )


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the `trace` commands run on
