"""Wall time of short `trace` commands, as a ratio to `python -c pass` in the same run.

Each command runs as a fresh subprocess (the installed `trace` script next to this
interpreter), N times, interleaved with the others so that machine load hits them alike;
the median is reported, in seconds and as a multiple of the median of `python -c pass`.
`trace status` runs against a real `trace dispatcher serve` (which serves chain_sync) on a
throwaway database, and once more against a port nobody listens on (its error path).
Reference lines show the floor the imports set: sqlglot alone, with its DuckDB dialect,
and the SQL gate module (what `trace sql check` needs), and grpc with the chain_sync
client (what `trace status` needs).

The target (issue 14): `trace --help`, `trace sql check` and `trace status` at most 0.3 s.

    python bench/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_support import drop_db, dsn_for, fresh_db, start_dispatcher

TARGET_SECONDS = 0.3


def trace_argv() -> list[str]:
    script = Path(sys.executable).parent / "trace"
    return [str(script)] if script.exists() else [sys.executable, "-m", "trace_platform"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commands(addr: str) -> dict[str, tuple[list[str], bool]]:
    """label -> (argv, has a 0.3 s target)."""
    trace = trace_argv()
    return {
        "python -c pass": ([sys.executable, "-c", "pass"], False),
        "trace --help": ([*trace, "--help"], True),
        "trace --version": ([*trace, "--version"], False),
        'trace sql check "SELECT 1"': ([*trace, "sql", "check", "SELECT 1"], True),
        "trace status (server up)": ([*trace, "status", "--addr", addr], True),
        "trace status (no server)": ([*trace, "status", "--addr", f"127.0.0.1:{closed_port()}"], True),
        "ref: python -c 'import sqlglot'": ([sys.executable, "-c", "import sqlglot"], False),
        "ref: sqlglot + its DuckDB dialect": (
            [sys.executable, "-c", "from sqlglot.dialects.dialect import Dialect; Dialect.get_or_raise('duckdb')"],
            False,
        ),
        "ref: python -c 'import core.sql_gate'": ([sys.executable, "-c", "import trace_platform.core.sql_gate"], False),
        "ref: python -c 'import grpc + client'": (
            [sys.executable, "-c", "import grpc, asyncio, trace_platform.clients.chain_sync"],
            False,
        ),
    }


def wall_and_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds, and CPU seconds (user + system) of the child: the second suffers less
    from a loaded machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(runs: int, addr: str, env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """label -> (median wall s, median CPU s)."""
    table = commands(addr)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in table}
    for label, (argv, _) in table.items():  # warm the page cache and .pyc files; check each works
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        expected = 1 if "no server" in label else 0
        if done.returncode != expected:
            raise RuntimeError(f"{label}: exit {done.returncode}, expected {expected}: {done.stderr[-500:]}")
    for _ in range(runs):
        for label, (argv, _) in table.items():
            times[label].append(wall_and_cpu(argv, env))
    return {
        label: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for label, t in times.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    db = await fresh_db("trace_bench_cli")
    admin = secrets.token_urlsafe(16)
    server_env = {
        "TRACE_DATABASE_URL": dsn_for(db),
        "TRACE_ADMIN_TOKEN": admin,
        "TRACE_WORKER_TOKEN": secrets.token_urlsafe(16),
        "TRACE_DATA_DIR": tempfile.mkdtemp(),
        "TRACE_LOG_LEVEL": "WARNING",
    }
    proc, addr = start_dispatcher(server_env)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
        env["TRACE_ADMIN_TOKEN"] = admin
        medians = await asyncio.to_thread(measure, args.runs, addr, env)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        await drop_db(db)

    floor, cpu_floor = medians["python -c pass"]
    print(f"{args.runs} runs each, medians; load average {os.getloadavg()[0]:.2f} at the end\n")
    print(f"| {'command':<40} | wall s | x pass | CPU s | x pass | wall <= {TARGET_SECONDS} s |")
    print(f"| {'-' * 40} | ------ | ------ | ----- | ------ | ---------- |")
    table = commands(addr)
    for label, (median, cpu) in medians.items():
        verdict = ("met" if median <= TARGET_SECONDS else "MISSED") if table[label][1] else ""
        print(
            f"| {label:<40} | {median:>6.3f} | {median / floor:>6.1f} | {cpu:>5.3f} | {cpu / cpu_floor:>6.1f} "
            f"| {verdict:<10} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
