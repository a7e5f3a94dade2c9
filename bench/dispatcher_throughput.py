"""Dispatcher end-to-end throughput vs PgQueuer, measured in the same run.

Every task goes the whole way: CreateTasks (batched) -> outbox row -> relay ->
wake-up queue -> ClaimTask -> Heartbeat -> CompleteTask -> ack. The Dispatcher runs
in its own process (`trace serve dispatcher`, that role alone; `--layout combined`: every
role but the worker in one `trace dispatcher serve`); the workers run here, each one what
the worker role builds (queue pool, batching client, WorkerRuntime with task slots),
and the operator heartbeats once and returns. A no-op task is latency bound, so the
run sweeps the number of concurrent task slots and prints each rate, then the latency
of one task at a time at one slot (create to CompleteTask answered) against PgQueuer's
enqueue to its entrypoint's return for one job at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import uvloop
from bench_support import drop_db, dsn_for, fresh_db, start_dispatcher, start_roles

from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import WorkerSettings
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

ORG = "00000000-0000-0000-0000-0000000000be"
LAYOUT = {"name": "separate"}


class TimedClient(BatchingDispatcherClient):
    """The worker's client, telling the bench when a completion has been answered."""

    on_complete: Any = None

    async def complete(self, ref: TaskRef, capability: str, *args: Any, **kwargs: Any) -> Any:
        answer = await super().complete(ref, capability, *args, **kwargs)
        if self.on_complete is not None:
            self.on_complete()
        return answer


def start_platform(env: dict[str, str]) -> tuple[Any, str]:
    if LAYOUT["name"] == "combined":
        return start_dispatcher(env)
    return start_roles(["dispatcher"], env)


async def trace_run(n: int, workers: int, concurrency: int, latency: list[float] | None = None) -> float:
    """Seconds for ``n`` no-op tasks; with ``latency``, one task at a time instead (each
    created once the previous one's completion was answered), its per-task ms appended."""
    db = await fresh_db("trace_bench")
    dsn = dsn_for(db)
    admin, worker_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {
        "TRACE_DATABASE_URL": dsn,
        "TRACE_ADMIN_TOKEN": admin,
        "TRACE_WORKER_TOKEN": worker_token,
        "TRACE_DATA_DIR": tempfile.mkdtemp(),
        "TRACE_OUTBOX_INTERVAL_SECONDS": "0.02",
        "TRACE_LOG_LEVEL": "WARNING",
    }
    proc, addr = start_platform(env)
    try:
        # Each worker is what `trace worker run` builds: a queue pool, a batching client
        # and the trusted WorkerRuntime with `concurrency` task slots.
        finished = asyncio.Event()
        done = 0

        async def heartbeat_once(ctx: OperatorContext) -> OperatorResult:
            nonlocal done
            await ctx.dispatcher.heartbeat(ctx.ref, ctx.capability_token)
            done += 1
            if done >= n:
                finished.set()
            return OperatorResult()

        settings = WorkerSettings(concurrency=concurrency, receive_batch=concurrency, poll_interval_seconds=0.05)
        pools = [await create_pool(dsn, min_size=2, max_size=4) for _ in range(workers)]
        queues = [PostgresQueue(p) for p in pools]
        async with grpc.aio.insecure_channel(addr) as channel:
            admin_client = DispatcherClient(channel, admin_token=admin)
            runtimes = [
                WorkerRuntime(
                    queue,
                    TimedClient(channel, worker_token=worker_token),
                    {"noop": heartbeat_once},
                    replace(settings, worker_id=f"bench-{i}"),
                )
                for i, queue in enumerate(queues)
            ]

            async def produce() -> None:
                spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop")
                for i in range(0, n, 200):
                    await admin_client.create_tasks([spec] * min(200, n - i))

            start = time.perf_counter()
            loops = [asyncio.create_task(r.run()) for r in runtimes]
            if latency is None:
                await produce()
                await finished.wait()
            else:
                answered = asyncio.Event()
                for r in runtimes:
                    assert isinstance(r.dispatcher, TimedClient)
                    r.dispatcher.on_complete = answered.set
                spec = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop")
                for _ in range(n):
                    answered.clear()
                    t0 = time.perf_counter()
                    await admin_client.create_tasks([spec])
                    await answered.wait()
                    latency.append((time.perf_counter() - t0) * 1000)
            for r in runtimes:
                await r.drain()  # the last completions and acks
            elapsed = time.perf_counter() - start
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        completed = await pools[0].fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        assert completed == n, f"only {completed} of {n} completed"
        for queue, pool in zip(queues, pools, strict=True):
            await queue.close()
            await pool.close()
        return elapsed
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        await drop_db(db)


async def pgqueuer_run(n: int, latency: list[float] | None = None) -> float:
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    db = await fresh_db("pgq_bench", migrate=False)
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
            answered.set()
            if done >= n:
                pgq.shutdown.set()

        producer_conn = await asyncpg.connect(dsn_for(db))
        producer = Queries(AsyncpgDriver(producer_conn))
        start = time.perf_counter()

        async def produce() -> None:
            for i in range(0, n, 200):
                k = min(200, n - i)
                await producer.enqueue(["noop"] * k, [None] * k, [0] * k)

        async def one_at_a_time() -> None:
            assert latency is not None
            for _ in range(n):
                answered.clear()
                t0 = time.perf_counter()
                await producer.enqueue(["noop"], [None], [0])
                await answered.wait()
                latency.append((time.perf_counter() - t0) * 1000)

        answered = asyncio.Event()

        # PgQueuer with its defaults (batch 10, unbounded concurrency), as its users run it.
        await asyncio.gather(
            produce() if latency is None else one_at_a_time(), pgq.run(dequeue_timeout=timedelta(seconds=0.05))
        )
        elapsed = time.perf_counter() - start
        await producer_conn.close()
        await conn.close()
        return elapsed
    finally:
        await drop_db(db)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=4, help="worker runtimes (as `trace serve worker` processes)")
    parser.add_argument("--concurrency", default="4,16,32", help="task slots per worker, comma separated sweep")
    parser.add_argument("--latency-tasks", type=int, default=200, help="tasks one at a time at one slot (0: skip)")
    parser.add_argument(
        "--layout",
        choices=("separate", "combined"),
        default="separate",
        help="separate: `trace serve dispatcher` alone in its process; combined: `trace dispatcher serve`",
    )
    args = parser.parse_args()
    LAYOUT["name"] = args.layout
    sweep = [int(c) for c in args.concurrency.split(",")]
    await trace_run(min(500, args.tasks), args.workers, sweep[0])  # warm-up
    rates = [(c, args.tasks / await trace_run(args.tasks, args.workers, c)) for c in sweep]
    pgq_rate = args.tasks / await pgqueuer_run(args.tasks)
    trace_lat: list[float] = []
    pgq_lat: list[float] = []
    if args.latency_tasks:
        # Interleaved halves, so drift on a shared machine hits both alike; 10 warm-up each.
        half = args.latency_tasks // 2
        for _ in range(2):
            for run, out in ((trace_run, trace_lat), (pgqueuer_run, pgq_lat)):
                got: list[float] = []
                if run is trace_run:
                    await trace_run(half + 10, 1, 1, got)
                else:
                    await pgqueuer_run(half + 10, got)
                out.extend(got[10:])
    print(f"tasks={args.tasks} per run, {args.workers} workers, Dispatcher layout: {args.layout}")
    print(f"pgqueuer baseline (no-op jobs, same PostgreSQL, its defaults): {pgq_rate:8.0f} jobs/s")
    for c, rate in rates:
        slots = c * args.workers
        verdict = "met" if rate >= 1000 else "NOT met"
        print(
            f"trace dispatcher, {slots:4d} task slots (gRPC create+claim+heartbeat+complete): {rate:8.0f} tasks/s"
            f"  ratio trace/pgqueuer {rate / pgq_rate:.2f}  target >= 1000 tasks/s: {verdict}"
            + (f"; ratio >= 0.5: {'met' if rate / pgq_rate >= 0.5 else 'MISSED'}" if slots == 128 else "")
        )
    if trace_lat and pgq_lat:
        t50, q50 = statistics.median(trace_lat), statistics.median(pgq_lat)
        t95, q95 = percentile(trace_lat, 0.95), percentile(pgq_lat, 0.95)
        print(f"one task at a time, one slot: trace create->completed p50 {t50:.2f} ms p95 {t95:.2f} ms")
        print(f"                              pgqueuer enqueue->done p50 {q50:.2f} ms p95 {q95:.2f} ms")
        print(f"latency ratio trace/pgqueuer p50 {t50 / q50:.2f}  target <= 2: {'met' if t50 / q50 <= 2 else 'MISSED'}")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


if __name__ == "__main__":
    uvloop.run(main())  # the event loop the `trace` commands run on
