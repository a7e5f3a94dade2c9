"""What the benchmarks share: a throwaway database per run on the PostgreSQL at
TRACE_BENCH_ADMIN_DSN, and platform processes on free ports: `trace dispatcher serve`
(every role but the worker in one process) or `trace serve ROLE...` (those roles only)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import IO

import asyncpg

from trace_platform.adapters.postgres.migrations import migrate_dsn

ADMIN_DSN = os.environ.get("TRACE_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(db: str) -> str:
    return ADMIN_DSN.rpartition("/")[0] + "/" + db


async def fresh_db(prefix: str, *, migrate: bool = True) -> str:
    """A new database named ``<prefix>_<random>``, with the platform's schema unless told not."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    if migrate:
        await migrate_dsn(dsn_for(name))
    return name


async def drop_db(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def start_dispatcher(env: Mapping[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`trace dispatcher serve` on a free loopback port; returns the process and its address."""
    return _start(["dispatcher", "serve"], env)


def start_roles(roles: list[str], env: Mapping[str, str]) -> tuple[subprocess.Popen[str], str]:
    """`trace serve ROLES` (only those roles, the cluster profile's process) on a free
    loopback port; returns the process and its address. The database is migrated already."""
    return _start(["serve", *roles], env)


def _start(command: list[str], env: Mapping[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "trace_platform", *command, "--listen", "127.0.0.1:0"],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    match = re.search(r"serving on (\S+)", first)
    if match is None:
        proc.kill()
        raise RuntimeError(f"`trace {' '.join(command)}` did not start: {first.strip()}")
    # Keep reading what it logs, so a full pipe never blocks the server mid-run.
    threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
    return proc, match.group(1)


def _drain(stream: IO[str]) -> None:
    for line in stream:
        sys.stderr.write(line)
