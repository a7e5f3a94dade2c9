"""Shared fixtures: a fresh PostgreSQL database per test, cloned from a migrated
template, and settings that point the platform at it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import pytest

from trace_platform.adapters.postgres.migrations import migrate_dsn, schema_fingerprint
from trace_platform.core.config import (
    DispatcherSettings,
    QuerySettings,
    Settings,
    TokenSettings,
    UserAuthSettings,
    WorkerSettings,
)
from trace_platform.lite.embedded_pg import ROOT_CLUSTERS, cluster_dir

ADMIN_DSN = os.environ.get("TRACE_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Lite run as root keeps its embedded cluster under /var/lib/trace-lite (outside the
    data dir, see lite/embedded_pg.py): stop and remove the clusters of this run's own
    data directories (under its basetemp), also those a SIGKILLed test process left
    running, so runs do not pile them up. Clusters of other runs are never touched; only
    the controlling process does it, after every worker has finished."""
    if _is_xdist_worker(session.config) or not ROOT_CLUSTERS.is_dir() or os.geteuid() != 0:
        return
    basetemp = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    ours = {cluster_dir(d) for d in _dirs(basetemp, depth=4)}
    for cluster in ours & set(ROOT_CLUSTERS.iterdir()):
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if str(cluster).encode() in argv and argv[0].endswith(b"postgres"):
                    os.kill(int(proc.name), signal.SIGKILL)
        shutil.rmtree(cluster, ignore_errors=True)


def _dirs(root: Path, depth: int) -> list[Path]:
    found = [root]
    if depth > 0:
        with contextlib.suppress(OSError):
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    found += _dirs(child, depth - 1)
    return found


@pytest.fixture(scope="session")
async def template_db() -> str:
    """A migrated template database, named after the schema it holds."""
    name = f"trace_tpl_{schema_fingerprint()}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            tmp = f"{name}_build_{secrets.token_hex(3)}"
            await conn.execute(f'CREATE DATABASE "{tmp}"')
            await migrate_dsn(dsn_for(tmp))
            try:
                await conn.execute(f'ALTER DATABASE "{tmp}" RENAME TO "{name}"')
            except asyncpg.DuplicateDatabaseError:
                await conn.execute(f'DROP DATABASE "{tmp}"')
    finally:
        await conn.close()
    return name


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    name = f"trace_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await conn.close()
    yield dsn_for(name)
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for assertions about state."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Fast test settings; ``@pytest.mark.dispatcher_settings(field=value)`` overrides the
    Dispatcher's, for tests whose timing the defaults would race."""
    base = _settings(database_url, tmp_path)
    marker = request.node.get_closest_marker("dispatcher_settings")
    if marker is not None:
        base = replace(base, dispatcher=replace(base.dispatcher, **marker.kwargs))
    return base


def _settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        listen="127.0.0.1:0",
        data_dir=tmp_path,
        worker_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        scratch_uri=f"file://{tmp_path}/scratch",
        db_pool_min=1,
        db_pool_max=8,
        tokens=TokenSettings(key_dir=tmp_path / "keys", ttl_seconds=300),
        dispatcher=DispatcherSettings(
            lease_seconds=5.0,
            retry_base_seconds=0.05,
            retry_max_seconds=0.2,
            outbox_interval_seconds=0.05,
            reaper_interval_seconds=0.1,
            retry_interval_seconds=0.05,
        ),
        worker=WorkerSettings(worker_id="test-worker", concurrency=4, poll_interval_seconds=0.1),
        query=QuerySettings(slots=2, memory_limit="512MB", threads=1),
        user_auth=UserAuthSettings(issuer="trace-test", hs256_secret=secrets.token_urlsafe(32)),
    )


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Subprocesses a test starts (append them): terminated, then killed, when it ends."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it returns a truthy value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)


__all__ = ["ADMIN_DSN", "dsn_for", "eventually", "replace"]
