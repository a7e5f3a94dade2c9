"""Compaction against real anvil, real Cryo, PostgreSQL and the in-process platform (Dispatcher,
worker, Query Service): a synced job's small ranges are merged into one version per
bucket; queries answer exactly as before (count, point lookups, every block once); a
query pinned before the cutover still reads its pinned versions; the collector deletes
the replaced objects only after the grace; a stale compaction (an input cut over since
planning) changes nothing."""

from __future__ import annotations

import asyncio
import glob
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import duckdb
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, user_client
from tests.integration.test_chain_sync import _wait_complete
from trace_platform.adapters.objectstore.factory import datasets_uri, object_stores
from trace_platform.adapters.postgres.compaction_repository import CompactionRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository, register_version
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.config import Settings
from trace_platform.core.models import DatasetPublication, StorageRef
from trace_platform.servers.chain_sync.compaction import RetiredCollector

BLOCKS = 60
CHUNK = 5
TARGET = 20


def job_yaml(name: str, compaction: bool) -> str:
    extra = f"compaction:\n  target_blocks: {TARGET}\n" if compaction else ""
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode: {{kind: fixed_target, from_block: 0, to_block: {BLOCKS}}}
streams:
  blocks: {{cryo_dataset_name: blocks, rpc_pool: local, chunk_size: {CHUNK}, max_inflight: 4}}
  transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: {CHUNK}, max_inflight: 4}}
{extra}"""


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    n = AnvilNode.start()
    try:
        for i in range(4):
            n.send(to=n.accounts[1], value=hex(10**15 + i))
        n.mine(BLOCKS + 5 - n.block_number())
        yield n
    finally:
        n.stop()


@pytest.fixture
async def running(settings: Settings, node: AnvilNode) -> AsyncIterator[RunningPlatform]:
    fast = replace(
        settings,
        rpc_pools={"local": node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.1),
    )
    platform = await start_platform(fast, migrate=False, run_worker=True)
    try:
        yield platform
    finally:
        await platform.stop(grace=0.5)


def _admin(ch: grpc.aio.Channel, settings: Settings) -> ChainSyncClient:
    assert settings.admin_token
    return ChainSyncClient(ch, admin_token=settings.admin_token)


async def _ledger(db: asyncpg.Connection, key: str) -> list[tuple[int, int, str]]:
    rows = await db.fetch(
        "SELECT range_start, range_end, status FROM chain_sync_ranges WHERE dataset_key = $1 ORDER BY range_start",
        key,
    )
    return [(r["range_start"], r["range_end"], r["status"]) for r in rows]


QUERIES = {
    "local.blocks": [
        "SELECT count(*), count(DISTINCT block_number), min(block_number), max(block_number) FROM dataset",
        "SELECT block_number, block_hash FROM dataset WHERE block_number = 37",
        "SELECT block_number, block_hash FROM dataset WHERE block_number IN (0, 4, 5, 19, 20, 59)"
        " ORDER BY block_number",
        "SELECT block_number FROM dataset ORDER BY block_number",
    ],
    "local.transactions": [
        "SELECT count(*), count(DISTINCT transaction_hash) FROM dataset",
        "SELECT block_number, transaction_hash FROM dataset ORDER BY block_number, transaction_index",
    ],
}


async def _answers(ch: grpc.aio.Channel, settings: Settings) -> dict[str, list[list[list[object]]]]:
    user = await user_client(ch, settings)
    out = {}
    for name, sqls in QUERIES.items():
        out[name] = [(await user.query(name, sql, limit=10_000)).rows for sql in sqls]
    return out


def _pinned_count(refs: tuple[tuple[str, StorageRef], ...]) -> tuple[int, int]:
    """count(*) and distinct blocks over exactly the pinned versions' objects."""
    files = sorted(f for _, ref in refs for f in glob.glob(ref.prefix + "*.parquet"))
    con = duckdb.connect()
    got = con.execute(f"SELECT count(*), count(DISTINCT block_number) FROM read_parquet({files!r})").fetchone()
    assert got is not None
    return int(got[0]), int(got[1])


async def test_compaction_keeps_every_answer_and_pinned_queries_keep_their_versions(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, job_yaml("local", compaction=False))
        await _wait_complete(admin, "local")
        before = await _answers(ch, settings)
        assert before["local.blocks"][0] == [[BLOCKS, BLOCKS, 0, BLOCKS - 1]]
        assert [r[0] for r in before["local.blocks"][3]] == list(range(BLOCKS))
        assert len(before["local.transactions"][1]) == 4
        assert len(await _ledger(db, "blocks")) == BLOCKS // CHUNK

        pool = await create_pool(settings.database_url or "", min_size=1, max_size=2)
        try:
            datasets = DatasetRepository(pool)
            pinned = await datasets.resolve_published(ORG, "local.blocks")  # a query that started before
            assert pinned is not None and len(pinned.versions) == BLOCKS // CHUNK
            old_yaml_hash = parse_chain_sync(job_yaml("local", compaction=False)).yaml_hash

            # Turning compaction on is an in-place update; the spec without it hashes as before.
            applied = await admin.apply(ORG, job_yaml("local", compaction=True))
            assert applied.yaml_hash != old_yaml_hash

            async def compacted() -> bool:
                n = await db.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'cut_over'")
                return bool(n == 2 * BLOCKS // TARGET)

            await eventually(compacted, timeout=60, interval=0.1)
            for key in ("blocks", "transactions"):
                assert await _ledger(db, key) == [(s, s + TARGET, "completed") for s in range(0, BLOCKS, TARGET)]
            after = await _answers(ch, settings)
            assert after == before  # count, point lookups, every block once, same transactions
            now = await datasets.resolve_published(ORG, "local.blocks")
            assert now is not None and len(now.versions) == BLOCKS // TARGET
            assert not {v for v, _ in now.versions} & {v for v, _ in pinned.versions}
            # The pinned query's versions are still there and still answer the same.
            assert _pinned_count(pinned.versions) == (BLOCKS, BLOCKS)
            retired = await db.fetchval("SELECT count(*) FROM chain_sync_retired_versions WHERE reason = 'compacted'")
            assert retired == 2 * BLOCKS // CHUNK
            # Nothing collected within the grace (the platform's own collector runs too).
            repo = CompactionRepository(pool)
            stores = object_stores(settings)
            assert await RetiredCollector(repo, stores, datasets_uri(settings), 3600).step() == 0
            assert _pinned_count(pinned.versions) == (BLOCKS, BLOCKS)
            # Past the grace: the replaced objects go, the compacted ones stay and answer.
            assert await RetiredCollector(repo, stores, datasets_uri(settings), 0).step() == 2 * BLOCKS // CHUNK
            assert all(not glob.glob(ref.prefix + "*") for _, ref in pinned.versions)
            # Their version rows too (a resolve reads every row); the merged ones stay.
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM dataset_versions WHERE dataset_uuid = $1", uuid.UUID(now.dataset_uuid)
                )
                == BLOCKS // TARGET
            )
            assert await _answers(ch, settings) == before
            # A second pass plans nothing: a merged bucket is never merged again.
            await eventually(compacted, timeout=5)
            assert await db.fetchval("SELECT count(*) FROM chain_sync_compactions") == 2 * BLOCKS // TARGET
        finally:
            await pool.close()


async def test_a_compaction_whose_input_changed_is_stale_and_changes_nothing(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    """The completion rule on its own: an input ledger row cut over since planning (as a
    reorg repair does) makes the compaction stale; the ledger keeps its rows, the merged
    version is retired unread."""
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, job_yaml("local", compaction=False))
        await _wait_complete(admin, "local")
        before = await _answers(ch, settings)
        job_id, dataset_uuid = await db.fetchrow(
            "SELECT s.job_id, s.dataset_uuid FROM chain_sync_streams s WHERE s.dataset_key = 'blocks'"
        )
        ranges = await db.fetch(
            "SELECT range_start, range_end, task_id, dataset_version FROM chain_sync_ranges"
            " WHERE dataset_key = 'blocks' AND range_start < $1 ORDER BY range_start",
            TARGET,
        )
        task_id, version = uuid.uuid4(), uuid.uuid4()
        declared = [{"dataset_uuid": str(dataset_uuid), "dataset_version": str(version), "config_hash": "x",
                     "range_start": 0, "range_end": TARGET}]  # fmt: skip
        # Created by hand as the planner creates it, but left 'running' (no worker takes it).
        await db.execute(
            "INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts,"
            " declared_outputs) VALUES ($1, $2, 'compact', '{}', '[]', '[]', 'running', 1, 1, $3::jsonb)",
            task_id,
            uuid.UUID(ORG),
            json.dumps(declared),
        )
        await db.execute(
            "INSERT INTO chain_sync_compactions (task_id, job_id, dataset_key, dataset_uuid, range_start, range_end,"
            " new_version) VALUES ($1, $2, 'blocks', $3, 0, $4, $5)",
            task_id,
            job_id,
            dataset_uuid,
            TARGET,
            version,
        )
        for r in ranges:
            await db.execute(
                "INSERT INTO chain_sync_compaction_inputs VALUES ($1, $2, $3, $4, $5)",
                task_id,
                r["range_start"],
                r["range_end"],
                r["task_id"],
                r["dataset_version"],
            )
        # A repair cuts the second input over to another version of the same data.
        moved = ranges[1]
        await db.execute(
            "UPDATE chain_sync_ranges SET dataset_version = $1 WHERE dataset_key = 'blocks' AND range_start = $2",
            uuid.uuid4(),
            moved["range_start"],
        )
        await db.execute(
            "UPDATE chain_sync_ranges SET dataset_version = $1 WHERE dataset_key = 'blocks' AND range_start = $2",
            moved["dataset_version"],
            moved["range_start"],
        )
        await db.execute(
            "UPDATE chain_sync_compaction_inputs SET old_version = $1 WHERE task_id = $2 AND range_start = $3",
            uuid.uuid4(),
            task_id,
            moved["range_start"],
        )
        ledger = await _ledger(db, "blocks")
        pub = DatasetPublication(
            dataset_uuid=str(dataset_uuid),
            dataset_version=str(version),
            storage_ref=StorageRef(scheme="file", prefix="/nonexistent/", glob="*.parquet"),
            config_hash="x",
            range_start=0,
            range_end=TARGET,
        )
        async with db.transaction():  # what the completion transaction does
            await register_version(db, pub, str(task_id))
            await db.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task_id)
        assert await db.fetchval("SELECT status FROM chain_sync_compactions WHERE task_id = $1", task_id) == "stale"
        assert await _ledger(db, "blocks") == ledger
        assert (
            await db.fetchval("SELECT reason FROM chain_sync_retired_versions WHERE dataset_version = $1", version)
            == "stale_compaction"
        )
        assert await _answers(ch, settings) == before
        # A merged version is not routed to downstream DAG jobs (its rows were, range by
        # range); a range version is.
        routed = "SELECT count(*) FROM outbox WHERE kind = 'route_event' AND payload ->> 'dataset_version' = $1"
        assert await db.fetchval(routed, str(version)) == 0
        assert await db.fetchval(routed, str(ranges[0]["dataset_version"])) == 1


async def test_a_compaction_publishing_another_version_cannot_complete(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, job_yaml("local", compaction=False))
        await _wait_complete(admin, "local")
    job_id, dataset_uuid = await db.fetchrow("SELECT job_id, dataset_uuid FROM chain_sync_streams LIMIT 1")
    task_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts)"
        " VALUES ($1, $2, 'compact', '{}', '[]', '[]', 'running', 1, 1)",
        task_id,
        uuid.UUID(ORG),
    )
    await db.execute(
        "INSERT INTO chain_sync_compactions (task_id, job_id, dataset_key, dataset_uuid, range_start, range_end,"
        " new_version) VALUES ($1, $2, 'blocks', $3, 0, 20, $4)",
        task_id,
        job_id,
        dataset_uuid,
        uuid.uuid4(),
    )
    ledger = await _ledger(db, "blocks")
    with pytest.raises(asyncpg.PostgresError) as exc:
        async with db.transaction():
            pub = DatasetPublication(
                dataset_uuid=str(dataset_uuid),
                dataset_version=str(uuid.uuid4()),  # not its declared version
                storage_ref=StorageRef(scheme="file", prefix="/nonexistent/", glob="*.parquet"),
            )
            await register_version(db, pub, str(task_id))
            await db.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task_id)
    assert exc.value.sqlstate == "TRPUB"
    assert await _ledger(db, "blocks") == ledger
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ledger))


FOLLOW = """
kind: chain_sync
name: tip
chain_id: 31337
mode:
  kind: follow_head
  from_block: 0
  tail_lag: 0
  head_poll_interval_seconds: 1
  max_head_age_seconds: 30
  max_reorg_depth: 4
streams:
  blocks: {cryo_dataset_name: blocks, rpc_pool: local, chunk_size: 4, max_inflight: 4}
  transactions: {cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 4, max_inflight: 4}
compaction: {target_blocks: 8}
"""


async def test_a_follow_head_job_compacts_below_the_reorg_window_and_a_reorg_is_still_repaired(
    settings: Settings, db: asyncpg.Connection
) -> None:
    node = AnvilNode.start(prune_history=False)  # anvil_reorg needs the fork point's state
    try:
        node.mine(40)
        fast = replace(
            settings,
            rpc_pools={"local": node.url},
            dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.1),
        )
        platform = await start_platform(fast, migrate=False, run_worker=True)
        try:
            async with grpc.aio.insecure_channel(platform.addr) as ch:
                admin = _admin(ch, settings)
                await admin.apply(ORG, FOLLOW)

                async def merged() -> bool:
                    n = await db.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'cut_over'")
                    return bool(n >= 2 * 2)  # [0, 8) and [8, 16) of both streams at least

                await eventually(merged, timeout=60, interval=0.1)
                top = await db.fetchval("SELECT max(range_end) FROM chain_sync_ranges WHERE status = 'completed'")
                # Nothing merged within 2 x max_reorg_depth + 1 of the published end.
                assert await db.fetchval("SELECT max(range_end) FROM chain_sync_compactions") <= top - 9
                await asyncio.sleep(1.0)  # the watcher has recorded the tip
                tip = node.block_number()
                tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
                node.rpc("anvil_reorg", 3, [[tx, 0]])

                async def repaired() -> bool:
                    return bool(await db.fetchval("SELECT count(*) FROM chain_sync_reorgs WHERE status = 'repaired'"))

                await eventually(repaired, timeout=60, interval=0.1)
                check = await admin.verify(ORG, "tip", 0, tip + 1)
                assert check.difference_count == 0, list(check.differences)
                user = await user_client(ch, settings)
                answer = await user.query("tip.blocks", "SELECT block_number FROM dataset ORDER BY 1", limit=10_000)
                rows = answer.rows
                assert [r[0] for r in rows][: tip + 1] == list(range(tip + 1))  # every block once
                eights = (
                    "SELECT count(*) FROM chain_sync_ranges WHERE dataset_key = 'blocks'"
                    " AND range_end - range_start = 8"
                )
                assert await db.fetchval(eights) >= 2  # the merged ranges stay through the repair
        finally:
            await platform.stop(grace=0.5)
    finally:
        node.stop()


async def test_a_compaction_that_failed_for_good_is_planned_again_and_its_output_collected(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, job_yaml("local", compaction=False))
        await _wait_complete(admin, "local")
        before = await _answers(ch, settings)
        job_id, dataset_uuid = await db.fetchrow(
            "SELECT job_id, dataset_uuid FROM chain_sync_streams WHERE dataset_key = 'blocks'"
        )
        dead, version = uuid.uuid4(), uuid.uuid4()
        await db.execute(
            "INSERT INTO tasks (id, org_id, operator, config, inputs, datasets, status, attempt, max_attempts)"
            " VALUES ($1, $2, 'compact', '{}', '[]', '[]', 'failed', 3, 3)",
            dead,
            uuid.UUID(ORG),
        )
        await db.execute(
            "INSERT INTO chain_sync_compactions (task_id, job_id, dataset_key, dataset_uuid, range_start, range_end,"
            " new_version) VALUES ($1, $2, 'blocks', $3, 0, $4, $5)",
            dead,
            job_id,
            dataset_uuid,
            TARGET,
            version,
        )
        for r in await db.fetch(
            "SELECT range_start, range_end, task_id, dataset_version FROM chain_sync_ranges"
            " WHERE dataset_key = 'blocks' AND range_end <= $1",
            TARGET,
        ):
            await db.execute(
                "INSERT INTO chain_sync_compaction_inputs VALUES ($1, $2, $3, $4, $5)",
                dead,
                r["range_start"],
                r["range_end"],
                r["task_id"],
                r["dataset_version"],
            )
        await admin.apply(ORG, job_yaml("local", compaction=True))

        async def compacted() -> bool:
            n = await db.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'cut_over'")
            return bool(n == 2 * BLOCKS // TARGET)

        await eventually(compacted, timeout=60, interval=0.1)
        assert await db.fetchval("SELECT status FROM chain_sync_compactions WHERE task_id = $1", dead) == "stale"
        assert (
            await db.fetchval("SELECT reason FROM chain_sync_retired_versions WHERE dataset_version = $1", version)
            == "stale_compaction"
        )
        assert await _ledger(db, "blocks") == [(s, s + TARGET, "completed") for s in range(0, BLOCKS, TARGET)]
        assert await _answers(ch, settings) == before
