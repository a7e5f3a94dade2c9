"""DAG routing is exactly once per (downstream job, upstream version) when a real
Dispatcher process is killed with SIGKILL in the middle of routing, restarted, and fed
duplicate route events."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.conftest import eventually
from tests.dag_support import StaticBundleLookupDouble, dag_yaml
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.dataset_repository import register_version
from trace_platform.core.config import Settings
from trace_platform.core.models import DatasetPublication, StorageRef
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Principal, Role

from .conftest import spawn, trace_env, wait_for_line

ORG = "00000000-0000-0000-0000-0000000000dd"
WHO = Principal(ORG, str(uuid.uuid4()), Role.EDITOR)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    yield p
    await p.close()


async def _active_dag(pool: asyncpg.Pool) -> str:
    """An active DAG whose alert_evaluate job reads the stream; returns the stream's dataset uuid."""
    bundles = StaticBundleLookupDouble()
    await AlertRepository(pool).create_definition(ORG, "large transfers", ["https://hooks.example/a"])
    service = DagService(DagRepository(pool), bundles, PostgresAlertLookup(pool), {"standard"})
    await service.deploy(WHO, dag_yaml(bundles.add(ORG)))
    await service.activate(WHO, "transfers", "1")
    # No head observation: the Dispatcher's planner plans nothing; the publications below
    # are the only source of route events.
    return str(
        await pool.fetchval(
            "SELECT s.dataset_uuid FROM chain_sync_streams s JOIN chain_sync_jobs j ON j.id = s.job_id "
            "WHERE j.name = 'transfers_ingest'"
        )
    )


async def _publish(pool: asyncpg.Pool, dataset_uuid: str, count: int, start: int = 0) -> list[str]:
    """Register ``count`` range versions (what a cryo_ingest completion registers); each
    registration writes its route_event in the same transaction."""
    versions = [str(uuid.uuid4()) for _ in range(count)]
    async with pool.acquire() as conn, conn.transaction():
        for i, version in enumerate(versions):
            ref = StorageRef("file", f"/datasets/{dataset_uuid}/{version}")
            lo = start + i * 10
            await register_version(
                conn, DatasetPublication(dataset_uuid, version, ref, "cryo_ingest.transactions:v1", lo, lo + 10), None
            )
    return versions


async def _routes(db: asyncpg.Connection) -> tuple[int, int, int]:
    """(ledger rows, alert tasks, distinct routed versions)."""
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM dag_routes) AS routes,"
        " (SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate') AS tasks,"
        " (SELECT count(DISTINCT config->>'dataset_version') FROM tasks WHERE operator = 'alert_evaluate') AS versions"
    )
    return int(row["routes"]), int(row["tasks"]), int(row["versions"])


async def _drained(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0)


async def test_sigkill_while_routing_is_blocked_in_its_transaction_routes_each_version_once(
    settings: Settings, db: asyncpg.Connection, pool: asyncpg.Pool, procs: list[subprocess.Popen[str]]
) -> None:
    dataset_uuid = await _active_dag(pool)
    env = trace_env(settings, TRACE_OUTBOX_BATCH="50", TRACE_OUTBOX_INTERVAL_SECONDS="0.02")
    first = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(first)
    wait_for_line(first, r"dispatcher serving on (\S+)")

    # Hold the ledger so the Dispatcher's routing transaction stops at its INSERT: it has
    # claimed the events and read the targets, and has committed nothing.
    blocker = await asyncpg.connect(settings.database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE dag_routes IN EXCLUSIVE MODE")
        versions = await _publish(pool, dataset_uuid, 20)

        async def routing_blocked() -> bool:
            n = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%INSERT INTO dag_routes%'"
            )
            return bool(n)

        await eventually(routing_blocked, timeout=15)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        await tx.rollback()  # the killed process's backend now finds its client gone: nothing commits
    finally:
        await blocker.close()

    async def orphan_gone() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE query LIKE '%INSERT INTO dag_routes%' AND pid <> pg_backend_pid()"
        )
        return bool(n == 0)

    await eventually(orphan_gone, timeout=15)
    assert await _routes(db) == (0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'route_event' AND status = 'pending'") == 20

    second = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(second)
    wait_for_line(second, r"dispatcher serving on (\S+)")
    await eventually(lambda: _drained(db), timeout=30)
    assert await _routes(db) == (20, 20, 20)
    routed = {
        r["v"]
        for r in await db.fetch("SELECT config->>'dataset_version' AS v FROM tasks WHERE operator = 'alert_evaluate'")
    }
    assert routed == set(versions)
    woken = await db.fetchval(
        "SELECT count(DISTINCT payload->>'task_id') FROM queue_messages WHERE payload->>'task_id' IN "
        "(SELECT task_id::text FROM dag_routes)"
    )
    assert woken == 20  # every routed task's wake-up reached the queue
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=15) == 0


async def test_repeated_sigkills_mid_routing_and_duplicate_events_make_one_task_per_version(
    settings: Settings, db: asyncpg.Connection, pool: asyncpg.Pool, procs: list[subprocess.Popen[str]]
) -> None:
    dataset_uuid = await _active_dag(pool)
    total = 300
    versions = await _publish(pool, dataset_uuid, total)
    # Every version announced twice more: as a task's event would, and as a replayed row.
    await db.execute(
        "INSERT INTO outbox (kind, payload) SELECT 'route_event', jsonb_build_object('dataset_uuid', $1::text, "
        "'dataset_version', v) FROM unnest($2::text[]) AS v, generate_series(1, 2)",
        dataset_uuid,
        versions,
    )
    env = trace_env(settings, TRACE_OUTBOX_BATCH="7", TRACE_OUTBOX_INTERVAL_SECONDS="0.01")
    kills = 0
    for _ in range(3):
        proc = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
        procs.append(proc)
        wait_for_line(proc, r"dispatcher serving on (\S+)")
        before = (await _routes(db))[0]

        async def progressed(before: int = before) -> bool:
            return (await _routes(db))[0] > before

        await eventually(progressed, timeout=20, interval=0.005)
        if await _drained(db):
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
        await asyncio.sleep(0.2)
    assert kills >= 1, "routing finished before any kill; the test did not exercise a crash"
    final = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], env)
    procs.append(final)
    wait_for_line(final, r"dispatcher serving on (\S+)")
    await eventually(lambda: _drained(db), timeout=60)
    assert await _routes(db) == (total, total, total)
    final.send_signal(signal.SIGTERM)
    assert final.wait(timeout=15) == 0
