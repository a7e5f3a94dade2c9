"""chain_sync end to end vs plain Cryo on the same anvil node, in the same run.

Full stack: the platform runs in its own process (`trace dispatcher serve --worker`,
through bench/chain_sync_platform.py, which only adds timers) against a fresh
PostgreSQL database; a chain_sync job for blocks, transactions and logs over [0, N)
is applied with ChainSyncClient, and the wall time runs from the apply to the job's
`completed_at` (status is polled every 0.25 s; the time is read from the job row).
The data is then checked through the Query Service with a user token (row counts and
distinct block numbers, transaction hashes, log positions); wrong data fails the run.

Baseline: one plain `cryo.async_freeze` of the three datasets over [0, N), in a child
process exactly as the Cryo runner calls it (`trace_platform.adapters.extract.cryo_child`),
with one chunk per dataset; measured right before and after each full-stack run and
averaged for that run's ratio. References: Cryo's default 1,000-block chunking, and one
runner-style child per dataset, all three at once (the full stack's extraction without
the platform).
Cryo's default chunking (1,000 blocks) is measured once for reference.

Planner: the real planner function (`servers.chain_sync.planner.plan_ranges`) through
`ChainSyncRepository.plan_stream` in this process against the bench database, for all
ranges of an N-block job, each step exactly what the Dispatcher's planner loop does
(`plannable_streams`, `plan_stream` per stream, `complete_finished_jobs`); between
steps one range per stream is marked completed (untimed), so in steady state every
per-stream transaction schedules one task, as in a running sync.

The chain (N blocks, 100 of them holding 3 log-emitting calls and 2 transfers) is
mined once and cached under the temp dir by bench/anvil_fixture.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anvil_fixture  # bench/, on sys.path as the script's directory
import asyncpg
import grpc
import pyarrow.parquet as pq
from bench_support import drop_db, dsn_for, fresh_db

from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository, HeadTarget
from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.config import LITE_ORG_ID
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.lite.anvil import AnvilNode
from trace_platform.servers.chain_sync.planner import plan_ranges

DATASETS = ("blocks", "transactions", "logs")
POOL = "bench"
CHAIN_ID = 31337
RATIO_TARGET, RATIO_STRETCH, PLANNER_TARGET_MS = 1.25, 1.0, 5.0
BENCH_DIR = Path(__file__).resolve().parent
PLATFORM_ARGS = ("dispatcher", "serve", "--worker", "--listen", "127.0.0.1:0")


@dataclass(frozen=True)
class Config:
    chunk_size: int
    max_inflight: int
    workers: int  # TRACE_WORKER_CONCURRENCY

    @staticmethod
    def parse(text: str) -> Config:
        chunk, inflight, workers = (int(x) for x in text.split(":"))
        return Config(chunk, inflight, workers)

    def key(self) -> str:
        return f"{self.chunk_size}:{self.max_inflight}:{self.workers}"

    def __str__(self) -> str:
        return self.key()


DEFAULT_CONFIG = Config(10_000, 1, 3)


@dataclass
class FullStackResult:
    config: Config
    seconds: float
    tasks: int
    retried: int
    span: float = 0.0  # first task created -> last task finished (database clock)
    failures: list[str] = field(default_factory=list)  # attempts that did not complete, and why
    platform_cpu: float = 0.0  # CPU seconds of the platform process, apply -> completed
    cryo_cpu: float = 0.0  # CPU seconds of its Cryo children
    anvil_cpu: float = 0.0  # CPU seconds anvil spent from apply to completed
    plain_before: float = 0.0  # the plain Cryo runs on either side of this one
    plain_after: float = 0.0
    cryo: dict[str, float] = field(default_factory=dict)  # per task: Cryo child (start-up + freeze)
    runner: dict[str, float] = field(default_factory=dict)  # per task: CryoRunner.run (cryo + output checks)
    operator: dict[str, float] = field(default_factory=dict)  # per task: the operator (+ upload, manifest)
    in_task: dict[str, float] = field(default_factory=dict)  # per task: started_at -> finished_at
    queued: dict[str, float] = field(default_factory=dict)  # per task: created_at -> started_at
    planner_steps: list[float] = field(default_factory=list)
    plan_busy: list[float] = field(default_factory=list)  # plan_stream calls that scheduled ranges
    plan_scheduled: int = 0

    @property
    def plain(self) -> float:
        return (self.plain_before + self.plain_after) / 2

    @property
    def ratio(self) -> float:
        return self.seconds / self.plain


def job_yaml(name: str, blocks: int, cfg: Config) -> str:
    streams = "".join(
        f"  {ds}:\n    cryo_dataset_name: {ds}\n    rpc_pool: {POOL}\n"
        f"    chunk_size: {cfg.chunk_size}\n    max_inflight: {cfg.max_inflight}\n"
        for ds in DATASETS
    )
    return (
        f"kind: chain_sync\nname: {name}\nchain_id: {CHAIN_ID}\n"
        f"mode:\n  kind: fixed_target\n  from_block: 0\n  to_block: {blocks}\nstreams:\n{streams}"
    )


def proc_cpu(pid: int) -> tuple[float, float]:
    """(own, waited-for children) CPU seconds of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds spent by anvil and by this process's finished children during a block."""

    node: AnvilNode
    anvil: float = 0.0
    children: float = 0.0

    def __enter__(self) -> CpuMeter:
        self._a, self._c = proc_cpu(self.node.proc.pid)[0], children_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.anvil = proc_cpu(self.node.proc.pid)[0] - self._a
        self.children = children_cpu() - self._c


# --- plain Cryo ----------------------------------------------------------------------


def cryo_child(datatypes: list[str], kwargs: dict[str, Any]) -> tuple[float, dict[str, int]]:
    """One `cryo.async_freeze` in the runner's child process; returns (seconds, summary)."""
    request = json.dumps({"datatypes": datatypes, "kwargs": kwargs}).encode()
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "trace_platform.adapters.extract.cryo_child"],
        input=request,
        capture_output=True,
        check=False,
        start_new_session=True,
    )
    seconds = time.perf_counter() - t0
    result = json.loads(out.stdout.decode() or "null")
    if not isinstance(result, dict) or not result.get("ok"):
        raise RuntimeError(f"plain cryo failed: {result!r}")
    summary = {k: int(v) for k, v in result["summary"].items()}
    if summary.get("n_errored", 0):
        raise RuntimeError(f"plain cryo reported errored chunks: {summary}")
    return seconds, summary


def plain_cryo(node: AnvilNode, fixture: anvil_fixture.Fixture, chunk_size: int | None) -> float:
    """All three datasets over [0, N) in one call; checks the row counts."""
    out = Path(tempfile.mkdtemp(prefix="trace-csbench-cryo-"))
    try:
        kwargs: dict[str, Any] = {
            "start_block": 0,
            "end_block": fixture.blocks,
            "rpc": node.url,
            "output_dir": str(out),
            "no_report": True,
            "verbose": False,
            "overwrite": True,
            "max_retries": 3,
            "initial_backoff": 250,
        }
        if chunk_size is not None:
            kwargs["chunk_size"] = chunk_size
        seconds, _ = cryo_child(list(DATASETS), kwargs)
        rows: dict[str, int] = defaultdict(int)
        for f in out.glob("*.parquet"):
            rows[f.name.split("__")[1]] += pq.read_metadata(f).num_rows
        expect = {"blocks": fixture.blocks, "transactions": fixture.transactions, "logs": fixture.logs}
        if dict(rows) != expect:
            raise RuntimeError(f"plain cryo rows {dict(rows)} != expected {expect}")
        return seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def split_cryo(node: AnvilNode, fixture: anvil_fixture.Fixture) -> float:
    """Reference: one runner-style child per dataset over [0, N), all three at once, no platform.

    What the full stack does with one range per stream, minus the platform: it separates
    the cost of extracting each dataset on its own from the platform's overhead."""
    out = Path(tempfile.mkdtemp(prefix="trace-csbench-split-"))
    try:
        procs = []
        t0 = time.perf_counter()
        for ds in DATASETS:
            kwargs = {"start_block": 0, "end_block": fixture.blocks, "rpc": node.url, "output_dir": str(out / ds)}
            kwargs |= {"chunk_size": fixture.blocks, "no_report": True, "verbose": False, "overwrite": True}
            kwargs |= {"max_retries": 3, "initial_backoff": 250}
            proc = subprocess.Popen(
                [sys.executable, "-m", "trace_platform.adapters.extract.cryo_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"datatypes": [ds], "kwargs": kwargs}).encode())
            proc.stdin.close()
            procs.append(proc)
        results = [json.loads(p.stdout.read().decode() or "null") for p in procs if p.stdout is not None]
        for p in procs:
            p.wait()
        seconds = time.perf_counter() - t0
        if not all(isinstance(r, dict) and r.get("ok") and not r["summary"].get("n_errored") for r in results):
            raise RuntimeError(f"split cryo failed: {results!r}")
        return seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def child_startup(node: AnvilNode) -> float:
    """Median time of the runner's Cryo child over a 1-block range: process start-up + import."""
    out = Path(tempfile.mkdtemp(prefix="trace-csbench-startup-"))
    try:
        kwargs = {"start_block": 0, "end_block": 1, "rpc": node.url, "output_dir": str(out), "chunk_size": 1}
        kwargs |= {"no_report": True, "verbose": False, "overwrite": True}
        return statistics.median(cryo_child(["blocks"], kwargs)[0] for _ in range(3))
    finally:
        shutil.rmtree(out, ignore_errors=True)


# --- the full stack ------------------------------------------------------------------


async def full_stack(node: AnvilNode, fixture: anvil_fixture.Fixture, cfg: Config, db: str) -> FullStackResult:
    """Sync [0, N) through a platform process on database ``db``; verify via the Query Service."""
    tmp = Path(tempfile.mkdtemp(prefix="trace-csbench-"))
    try:
        return await _full_stack(node, fixture, cfg, db, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _full_stack(
    node: AnvilNode, fixture: anvil_fixture.Fixture, cfg: Config, db: str, tmp: Path
) -> FullStackResult:
    admin_token, worker_token = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    user_secret = secrets.token_urlsafe(32)
    timings = tmp / "timings.jsonl"
    env = dict(
        os.environ,
        TRACE_DATABASE_URL=dsn_for(db),
        TRACE_ADMIN_TOKEN=admin_token,
        TRACE_WORKER_TOKEN=worker_token,
        TRACE_DATA_DIR=str(tmp / "data"),
        TRACE_USER_JWT_SECRET=user_secret,
        TRACE_RPC_POOL_BENCH_URL=node.url,
        TRACE_WORKER_CONCURRENCY=str(cfg.workers),
        TRACE_PLANNER_INTERVAL_SECONDS="0.25",  # the default: apply and completions wake the planner
        TRACE_LOG_LEVEL="WARNING",
        TRACE_BENCH_TIMINGS=str(timings),
    )
    log_path = tmp / "platform.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - start-up, outside the timed section
            [sys.executable, str(BENCH_DIR / "chain_sync_platform.py"), *PLATFORM_ARGS],
            env=env,
            stderr=log,
            stdout=subprocess.DEVNULL,
        )
    try:
        addr = await _serving_addr(proc, log_path)
        name = f"bench_{secrets.token_hex(3)}"
        user_token = issue_user_token(user_secret, issuer="trace-lite", subject="bench", org_id=LITE_ORG_ID)
        await _bench_member(dsn_for(db))  # the Query Service reads only for members of the org
        async with grpc.aio.insecure_channel(addr) as channel:
            admin = ChainSyncClient(channel, admin_token=admin_token)
            query = ApiQueryClient(channel, token=user_token)
            anvil_before, platform_before = proc_cpu(node.proc.pid)[0], proc_cpu(proc.pid)
            t0 = time.time()
            await admin.apply(LITE_ORG_ID, job_yaml(name, fixture.blocks, cfg))
            while True:  # polled slowly, so the bench adds little load; the time comes from completed_at
                jobs = await admin.status(LITE_ORG_ID, name)
                if jobs and jobs[0].completed:
                    break
                if time.time() > t0 + 900 or proc.poll() is not None:
                    raise RuntimeError(f"sync did not complete; platform log: {log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.25)
            seconds = await _completed_at(db, name) - t0  # same host clock as time.time()
            platform_after = proc_cpu(proc.pid)  # (platform process, its finished Cryo children)
            platform_cpu = (platform_after[0] - platform_before[0], platform_after[1] - platform_before[1])
            anvil_cpu = proc_cpu(node.proc.pid)[0] - anvil_before
            await _verify(query, name, fixture)
    finally:
        proc.terminate()
        proc.wait(30)
    result = await _task_stats(db, cfg, seconds)
    result.platform_cpu, result.cryo_cpu = platform_cpu
    result.anvil_cpu = anvil_cpu
    _read_timings(timings, result)
    return result


async def _completed_at(db: str, name: str) -> float:
    conn = await asyncpg.connect(dsn_for(db))
    try:
        at = await conn.fetchval("SELECT extract(epoch FROM completed_at) FROM chain_sync_jobs WHERE name = $1", name)
    finally:
        await conn.close()
    return float(at)


async def _serving_addr(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"serving on (\S+)", log_path.read_text(errors="replace"))  # noqa: ASYNC240 - tiny file
        if m:
            return m.group(1)
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:]  # noqa: ASYNC240 - start-up failed
    raise RuntimeError(f"platform did not start: {tail}")


async def _bench_member(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await IdentityRepository(pool).ensure_member(LITE_ORG_ID, "lite", "bench", "viewer")
    finally:
        await pool.close()


async def _verify(query: ApiQueryClient, name: str, fixture: anvil_fixture.Fixture) -> None:
    """Fail loudly unless the Query Service returns exactly the chain's rows."""
    n = fixture.blocks
    checks = (
        ("blocks", "SELECT count(*), count(DISTINCT block_number), min(block_number), max(block_number) FROM dataset",
         [n, n, 0, n - 1]),
        ("transactions", "SELECT count(*), count(DISTINCT transaction_hash) FROM dataset",
         [fixture.transactions, fixture.transactions]),
        ("logs", "SELECT count(*), count(DISTINCT (block_number, log_index)) FROM dataset",
         [fixture.logs, fixture.logs]),
    )  # fmt: skip
    for ds, sql, expected in checks:
        rows = (await query.query(f"{name}.{ds}", sql)).rows
        got = [int(v) for v in rows[0]] if rows else None
        if got != expected:
            raise AssertionError(f"WRONG DATA in {name}.{ds}: {sql} -> {got}, expected {expected}")


async def _task_stats(db: str, cfg: Config, seconds: float) -> FullStackResult:
    conn = await asyncpg.connect(dsn_for(db))
    try:
        rows = await conn.fetch(
            "SELECT id::text, status, attempt, extract(epoch FROM started_at - created_at) AS queued,"
            " extract(epoch FROM finished_at - started_at) AS in_task FROM tasks WHERE operator = 'cryo_ingest'"
        )
        failures = await conn.fetch(
            "SELECT outcome, coalesce(error_message, '') AS error FROM task_attempts"
            " WHERE outcome IS DISTINCT FROM 'completed'"
        )
        span = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at) - min(created_at)) FROM tasks WHERE operator = 'cryo_ingest'"
        )
    finally:
        await conn.close()
    if any(r["status"] != "completed" for r in rows):
        raise AssertionError(f"not every task completed: {sorted({r['status'] for r in rows})}")
    return FullStackResult(
        cfg,
        seconds,
        tasks=len(rows),
        retried=sum(1 for r in rows if r["attempt"] > 1),
        span=float(span),
        failures=[f"{r['outcome']}: {r['error'][:160]}" for r in failures],
        queued={r["id"]: float(r["queued"]) for r in rows},
        in_task={r["id"]: float(r["in_task"]) for r in rows},
    )


def _read_timings(path: Path, result: FullStackResult) -> None:
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        kind = rec["kind"]
        if kind == "cryo":
            result.cryo[rec["task"]] = rec["cryo"]
            result.runner[rec["task"]] = rec["run"]
        elif kind == "operator":
            result.operator[rec["task"]] = rec["seconds"]
        elif kind == "planner_step":
            result.planner_steps.append(rec["seconds"])
        elif kind == "plan_stream" and rec["scheduled"]:
            result.plan_busy.append(rec["seconds"])
            result.plan_scheduled += rec["scheduled"]


# --- the planner, in process -------------------------------------------------------


@dataclass(frozen=True)
class PlannerResult:
    chunk_size: int
    max_inflight: int
    tasks: int
    plan_ms_per_task: float  # plan_stream transactions that scheduled ranges / tasks
    step_ms_per_task: float  # whole planner steps (incl. plannable_streams, complete_finished_jobs) / tasks
    idle_step_ms: float  # one step with every window full
    note: str = ""


async def planner_bench(pool: asyncpg.Pool, blocks: int, chunk_size: int, max_inflight: int) -> PlannerResult:
    repo = ChainSyncRepository(pool)
    cfg = Config(chunk_size, max_inflight, 1)
    spec = parse_chain_sync(job_yaml(f"planner_{chunk_size}_{max_inflight}", blocks, cfg))
    # Its own org: stream dataset UUIDs derive from (org, chain, job name, dataset key).
    org = str(uuid.uuid4())
    job_id, _ = await repo.apply(org, spec)
    # fixed_target plans only up to the observed head: a chain beyond the target, as the
    # head observer would have recorded it.
    await repo.record_head(HeadTarget(org, spec.chain_id, POOL, 0.0, 0.0), blocks)

    def plan(state: Any) -> Any:
        return plan_ranges(state, time.time())

    busy: list[float] = []
    steps: list[float] = []
    idle: list[float] = []
    tasks = 0
    # The three streams share pool, chunk, window and cursor: one task per range extracts
    # all three datasets (see core/cryo_task.py).
    expected = -(-blocks // chunk_size)
    async with pool.acquire() as side:
        while tasks < expected:
            t0 = time.perf_counter()
            scheduled_this_step = 0
            for job, key in await repo.plannable_streams(500):  # RangePlanner.step, timed piece by piece
                s0 = time.perf_counter()
                k = await repo.plan_stream(job, key, plan, 3)
                if k:
                    busy.append(time.perf_counter() - s0)
                    scheduled_this_step += k
            await repo.complete_finished_jobs()
            elapsed = time.perf_counter() - t0
            if scheduled_this_step:
                steps.append(elapsed)
            else:
                idle.append(elapsed)
            tasks += scheduled_this_step
            if len(idle) < 20 and tasks < expected:
                continue  # measure idle steps (windows full) a few times first
            # untimed: one range per stream completes, as the cryo_ingest trigger would do it
            await side.execute(
                "UPDATE chain_sync_ranges r SET status = 'completed', dataset_version = gen_random_uuid()"
                " FROM (SELECT DISTINCT ON (dataset_key) task_id FROM chain_sync_ranges"
                "       WHERE job_id = $1 AND status = 'scheduled' ORDER BY dataset_key, range_start) d"
                " WHERE r.task_id = d.task_id",
                job_id,
            )
    await repo.set_enabled(org, spec.name, False)  # out of the next measurement's plannable streams
    if tasks != expected:
        raise AssertionError(f"planner scheduled {tasks} tasks, expected {expected}")
    return PlannerResult(
        chunk_size,
        max_inflight,
        tasks,
        plan_ms_per_task=sum(busy) * 1000 / tasks,
        step_ms_per_task=sum(steps) * 1000 / tasks,
        idle_step_ms=statistics.median(idle) * 1000 if idle else float("nan"),
    )


# --- report --------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISSED"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(
    fixture: anvil_fixture.Fixture,
    plains: list[float],
    default_chunking: float,
    split: list[float],
    cpu: dict[str, list[tuple[float, float]]],
    startup: float,
    runs: list[FullStackResult],
    planners: list[PlannerResult],
) -> None:
    mean, median = statistics.mean, statistics.median
    print(
        f"\nchain: {fixture.blocks} anvil blocks ({fixture.transactions} transactions, {fixture.logs} logs);"
        f" datasets: {', '.join(DATASETS)}"
    )
    print(
        f"plain cryo (one call, one chunk per dataset, runner's child process), around the full-stack runs:"
        f" {', '.join(f'{p:.2f}' for p in plains)} s"
    )
    print(f"plain cryo with cryo's default 1,000-block chunks (reference): {default_chunking:.2f} s")
    print(
        f"reference: one runner child per dataset, all three at once, no platform: {median(split):.2f} s"
        f" (median of {', '.join(f'{x:.2f}' for x in split)})"
    )
    print(f"cryo child start-up (the runner's child over a 1-block range): {ms(startup)}")
    print(
        f"\n{'configuration (chunk:inflight:workers)':40} {'full s':>7} {'plain s':>7} {'ratio':>6} {'tasks':>5}"
        f" {'retry':>5} {'Σcryo s':>8} {'Δ/task':>8} {'slot ovh':>9} {'in-task ovh':>11} {'CPU s':>6}"
    )
    by_config: dict[Config, list[FullStackResult]] = defaultdict(list)
    for r in runs:
        by_config[r.config].append(r)
        in_task_ovh = mean(r.in_task[t] - r.cryo[t] for t in r.cryo)
        print(
            f"{r.config!s:40} {r.seconds:7.2f} {r.plain:7.2f} {r.ratio:6.2f} {r.tasks:5d} {r.retried:5d}"
            f" {sum(r.cryo.values()):8.2f} {ms((r.seconds - r.plain) / r.tasks):>8}"
            f" {ms((r.config.workers * r.seconds - sum(r.cryo.values())) / r.tasks):>9} {ms(in_task_ovh):>11}"
            f" {r.anvil_cpu + r.cryo_cpu + r.platform_cpu:6.2f}"
        )
    print("  Δ/task: (full - plain) / tasks; slot ovh: (workers x full - Σcryo) / tasks, worker-slot time not")
    print("  spent in a Cryo child; in-task ovh: claim..complete minus the Cryo child, per task (mean);")
    print("  CPU s: anvil + Cryo children + the platform process from apply to completed (PostgreSQL not counted)")
    for r in runs:
        for failure in r.failures:
            print(f"  retried attempt in a {r.config.key()} run: {failure}")
    summary = {cfg: median(r.ratio for r in rs) for cfg, rs in by_config.items()}
    print("\nmedian ratio per configuration: " + "; ".join(f"{c.key()} {v:.2f}" for c, v in summary.items()))
    best_cfg = min(summary, key=lambda c: summary[c])
    best = sorted(by_config[best_cfg], key=lambda r: r.ratio)[len(by_config[best_cfg]) // 2]
    c, rn, op = best.cryo, best.runner, best.operator
    print(f"\nwhere the time goes, per task (mean), {best_cfg.key()} run with ratio {best.ratio:.2f}:")
    print(
        f"  cryo child {ms(mean(c.values()))} (start-up ~{ms(startup)})"
        f" + output checks {ms(mean(rn[t] - c[t] for t in c))}"
        f" + upload/manifest {ms(mean(op[t] - rn[t] for t in c))} = operator {ms(mean(op.values()))};"
        f" claim..complete {ms(mean(best.in_task.values()))}; queued (created -> started) median"
        f" {ms(median(best.queued.values()))}"
    )
    anvil_plain, cryo_plain = (median(x) for x in zip(*cpu["plain"], strict=True))
    anvil_split, cryo_split = (median(x) for x in zip(*cpu["split"], strict=True))
    print(
        f"  CPU seconds (2 cores): plain cryo: anvil {anvil_plain:.2f} + cryo {cryo_plain:.2f}"
        f" = {anvil_plain + cryo_plain:.2f}; one child per dataset: anvil {anvil_split:.2f} + cryo {cryo_split:.2f}"
        f" = {anvil_split + cryo_split:.2f}; this run: anvil {best.anvil_cpu:.2f} + cryo {best.cryo_cpu:.2f}"
        f" + platform process {best.platform_cpu:.2f} = {best.anvil_cpu + best.cryo_cpu + best.platform_cpu:.2f}"
        " (+ PostgreSQL, not counted)"
    )
    print(
        f"  first task created -> last finished {best.span:.2f} s of the {best.seconds:.2f} s; the rest"
        f" ({ms(best.seconds - best.span)}) is the apply RPC, the first planner tick and the job's completion"
    )
    steps = best.planner_steps
    print(
        f"  planner loop in that run: {len(steps)} steps taking {sum(steps):.2f} s of wall time"
        f" ({sum(steps) * 1000 / max(1, len(steps)):.1f} ms/step, under load); the"
        f" {len(best.plan_busy)} per-stream transactions that scheduled {best.plan_scheduled} tasks took"
        f" {ms(sum(best.plan_busy))} -> {sum(best.plan_busy) * 1000 / max(1, best.plan_scheduled):.1f} ms/task"
    )
    heads = f"{'tasks':>5} {'plan_stream ms/task':>20} {'step ms/task':>13} {'idle step':>10}"
    print(f"\n{'planner, in process, bench database':38} {heads}")
    for p in planners:
        idle = f"{p.idle_step_ms:.2f} ms" if p.idle_step_ms == p.idle_step_ms else "-"
        print(
            f"chunk {p.chunk_size:<6} max_inflight {p.max_inflight:<5} {p.tasks:5d} {p.plan_ms_per_task:20.2f}"
            f" {p.step_ms_per_task:13.2f} {idle:>10}  {p.note}"
        )
    judged = planners[0]
    print(
        f"\ntargets (best configuration {best_cfg.key()}, median of {len(by_config[best_cfg])} run(s)):\n"
        f"  full/plain <= {RATIO_TARGET}: {summary[best_cfg]:.2f} {verdict(summary[best_cfg] <= RATIO_TARGET)}"
        f"   (stretch <= {RATIO_STRETCH}: {verdict(summary[best_cfg] <= RATIO_STRETCH)})\n"
        f"  planner <= {PLANNER_TARGET_MS:.0f} ms/task ({judged.tasks} tasks, steady state, whole steps):"
        f" {judged.step_ms_per_task:.2f} ms/task {verdict(judged.step_ms_per_task <= PLANNER_TARGET_MS)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument(
        "--config",
        action="append",
        type=Config.parse,
        metavar="CHUNK:INFLIGHT:WORKERS",
        help=f"chunk_size:max_inflight:TRACE_WORKER_CONCURRENCY, repeatable (default {DEFAULT_CONFIG.key()})",
    )
    parser.add_argument("--repeat", type=int, default=5, help="full-stack runs per configuration")
    parser.add_argument("--planner-chunk", type=int, default=100, help="chunk size of the main planner measurement")
    args = parser.parse_args()
    configs: list[Config] = args.config or [DEFAULT_CONFIG]

    fixture = anvil_fixture.ensure(args.blocks)
    node = anvil_fixture.start_node(fixture)
    dbs: list[str] = []
    try:
        anvil_fixture.verify(node, fixture)
        startup = child_startup(node)
        plain_cryo(node, fixture, fixture.blocks)  # warm-up: anvil's caches, the page cache
        default_chunking = plain_cryo(node, fixture, None)
        cpu: dict[str, list[tuple[float, float]]] = defaultdict(list)  # (anvil, cryo children) CPU seconds

        def plain() -> float:
            with CpuMeter(node) as meter:
                seconds = plain_cryo(node, fixture, fixture.blocks)
            cpu["plain"].append((meter.anvil, meter.children))
            return seconds

        plains = [plain()]
        runs: list[FullStackResult] = []
        split: list[float] = []
        for _ in range(args.repeat):  # alternate plain and full stack: drift on a shared machine hits both
            for cfg in configs:
                db = await fresh_db("trace_csbench")
                dbs.append(db)
                run = await full_stack(node, fixture, cfg, db)
                if len(dbs) > 1:  # the first is kept for the planner measurement
                    await drop_db(dbs.pop())
                plains.append(plain())
                run.plain_before, run.plain_after = plains[-2], plains[-1]
                runs.append(run)
                print(f"  {cfg.key()}: full stack {run.seconds:.2f} s, plain {run.plain:.2f} s", flush=True)
            with CpuMeter(node) as meter:
                split.append(split_cryo(node, fixture))
            cpu["split"].append((meter.anvil, meter.children))
        # The planner against a bench database (the platform is stopped; the sync's rows are there).
        pool = await create_pool(dsn_for(dbs[0]), 2, 2)  # the planner's connection + the side one
        try:
            await planner_bench(pool, fixture.blocks, 1000, 4)  # warm-up: prepared statements, caches
            planners = [await planner_bench(pool, fixture.blocks, args.planner_chunk, 4)]
            for key in dict.fromkeys((c.chunk_size, c.max_inflight) for c in configs):
                planners.append(await planner_bench(pool, fixture.blocks, *key))
        finally:
            await pool.close()
        # What-if, not a target: the same with asynchronous commit (a durable commit is ~2 ms here).
        pool = await create_pool(dsn_for(dbs[0]) + "?synchronous_commit=off", 2, 2)
        try:
            await planner_bench(pool, fixture.blocks, 1000, 4)
            off = await planner_bench(pool, fixture.blocks, args.planner_chunk, 4)
            planners.append(dataclasses.replace(off, note="synchronous_commit=off"))
        finally:
            await pool.close()
    finally:
        node.stop()
        for db in dbs:
            await drop_db(db)
    report(fixture, plains, default_chunking, split, cpu, startup, runs, planners)


if __name__ == "__main__":
    asyncio.run(main())
