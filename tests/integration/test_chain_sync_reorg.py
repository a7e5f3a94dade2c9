"""Reorg repair against a real anvil, real Cryo and PostgreSQL: a follow_head sync with
tail_lag 0, then ``anvil_reorg`` on the node. Within seconds every published block equals
the node's canonical chain (checked by VerifyChainSync), a new query reads the repaired
blocks and transactions, the replaced versions are no longer resolved, the invalidation
names the replaced and the new versions, and `trace status` shows the reorg. A reorg deeper
than the job's max_reorg_depth stops the job with REORG_TOO_DEEP and repairs nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import grpc
import pytest
from prometheus_client import CollectorRegistry

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, user_client
from trace_platform.adapters.objectstore.factory import object_stores
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.postgres.reorg_repository import ReorgRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient, pb
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import dispatcher_pb2
from trace_platform.servers.chain_sync.metrics import ChainSyncMetrics
from trace_platform.servers.chain_sync.reorg import ReorgWatcher
from trace_platform.servers.chain_sync.verify import ChainVerifier, _read
from trace_platform.servers.query.attach import DatasetAttacher
from trace_platform.views.live_status import render_status

HEAD = 24  # blocks mined before the sync starts: [0, 25) is published first


def follow_yaml(name: str, max_depth: int | None = None) -> str:
    depth = f"\n  max_reorg_depth: {max_depth}" if max_depth is not None else ""
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode:
  kind: follow_head
  from_block: 0
  tail_lag: 0
  head_poll_interval_seconds: 1
  max_head_age_seconds: 30{depth}
streams:
  blocks: {{cryo_dataset_name: blocks, rpc_pool: local, chunk_size: 4, max_inflight: 4}}
  transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 4, max_inflight: 4}}
"""


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    n = AnvilNode.start(prune_history=False)  # anvil_reorg needs the fork point's state
    try:
        n.mine(HEAD)
        yield n
    finally:
        n.stop()


@pytest.fixture
async def running(settings: Settings, node: AnvilNode) -> AsyncIterator[RunningPlatform]:
    fast = replace(
        settings,
        rpc_pools={"local": node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
    )
    platform = await start_platform(fast, migrate=False, run_worker=True)
    try:
        yield platform
    finally:
        await platform.stop(grace=0.5)


def _admin(ch: grpc.aio.Channel, settings: Settings) -> ChainSyncClient:
    assert settings.admin_token
    return ChainSyncClient(ch, admin_token=settings.admin_token)


async def _synced_to(admin: ChainSyncClient, name: str, end: int) -> pb.ChainSyncStatus:
    async def done() -> pb.ChainSyncStatus | None:
        jobs = await admin.status(ORG, name)
        return jobs[0] if jobs and jobs[0].synced_to >= end else None

    status: pb.ChainSyncStatus = await eventually(done, timeout=90, interval=0.1)
    return status


async def _recorded_to(db: asyncpg.Connection, end: int) -> None:
    """The detector has recorded the hashes of the published blocks up to ``end`` (those
    below its kept window are pruned)."""

    async def recorded() -> bool:
        return bool(
            await db.fetchval(
                "SELECT max(block_number) = $1 - 1 AND count(*) = max(block_number) - min(block_number) + 1 "
                "FROM chain_sync_block_hashes",
                end,
            )
        )

    await eventually(recorded, timeout=30, interval=0.1)


async def _hashes_within(db: asyncpg.Connection, lo: int, hi: int) -> bool:
    """The recorded blocks are exactly ``lo`` .. ``hi``."""
    got = await db.fetchrow(
        "SELECT min(block_number) AS lo, max(block_number) AS hi, count(*) AS n FROM chain_sync_block_hashes"
    )
    return bool(got and (got["lo"], got["hi"], got["n"]) == (lo, hi, hi - lo + 1))


def _node_hashes(node: AnvilNode, end: int) -> list[str]:
    return [node.rpc("eth_getBlockByNumber", hex(n), False)["hash"] for n in range(end)]


async def _published_versions(db: asyncpg.Connection, name: str) -> set[str]:
    """The versions a new query of ``name`` resolves (the trusted registry's answer)."""
    resolved = await DatasetRepository(db).resolve_published(ORG, name)  # type: ignore[arg-type]  # only fetch()
    assert resolved is not None
    return {v for v, _ in resolved.versions}


@pytest.mark.parametrize("changed_transactions", [False, True], ids=["same_txs", "changed_txs"])
async def test_reorg_is_repaired_and_cut_over(
    running: RunningPlatform, node: AnvilNode, settings: Settings, db: asyncpg.Connection, changed_transactions: bool
) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, follow_yaml("tip"))
        await _synced_to(admin, "tip", HEAD + 1)
        await _recorded_to(db, HEAD + 1)
        assert (await admin.verify(ORG, "tip")).difference_count == 0
        before = _node_hashes(node, HEAD + 1)
        old_blocks = await _published_versions(db, "tip.blocks")
        old_txs = await _published_versions(db, "tip.transactions")
        pinned = await DatasetRepository(db).resolve_published(ORG, "tip.blocks")  # type: ignore[arg-type]
        assert pinned is not None  # what a query that started now has pinned

        # Depth 3 (new timestamps, and with or without a changed transaction): blocks
        # HEAD-2 .. HEAD are replaced.
        tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
        reorged_at = asyncio.get_running_loop().time()
        node.rpc("anvil_reorg", 3, [[tx, 0]] if changed_transactions else [])
        after = _node_hashes(node, HEAD + 1)
        assert after[: HEAD - 2] == before[: HEAD - 2] and all(after[n] != before[n] for n in range(HEAD - 2, HEAD + 1))

        async def repaired() -> pb.ChainSyncStatus | None:
            job = (await admin.status(ORG, "tip"))[0]
            return job if job.reorgs.seen and not job.reorgs.repairing else None

        job = await eventually(repaired, timeout=30, interval=0.05)
        took = asyncio.get_running_loop().time() - reorged_at
        assert took < 10, took  # "within a few seconds"
        assert (job.reorgs.seen, job.reorgs.last_depth, job.reorgs.max_depth) == (1, 3, 3)
        assert job.reorgs.recent[0].fork_block == HEAD - 2 and job.reorgs.recent[0].tip_block == HEAD
        assert job.reorgs.recent[0].status == "repaired" and job.reorgs.ranges_repaired >= 2
        assert not job.paused and not job.reorgs.stopped_reason
        assert "reorgs: 1 seen, last depth 3, deepest 3" in render_status([job])

        # Every published block equals the node's canonical chain, through the verify machinery.
        check = await admin.verify(ORG, "tip", 0, HEAD + 1)
        assert check.difference_count == 0, list(check.differences)
        # A new query reads the repaired blocks and the reorg's transaction.
        user = await user_client(ch, settings)
        rows = await user.query("tip.blocks", "SELECT block_number, block_hash FROM dataset ORDER BY 1", limit=10_000)
        got = {int(r[0]): "0x" + bytes(r[1]).hex() for r in rows.rows}
        assert [got[n] for n in range(HEAD + 1)] == after
        assert len([r for r in rows.rows if int(r[0]) <= HEAD]) == HEAD + 1  # each block once
        txs = await user.query(
            "tip.transactions", f"SELECT count(*) FROM dataset WHERE block_number = {HEAD - 2}", limit=10
        )
        assert txs.rows == [[1 if changed_transactions else 0]]

        # A query that pinned the versions before the cutover still reads them whole: the
        # replaced versions' objects stay (manifest checked), with the old chain's hashes.
        attacher = DatasetAttacher(object_stores(running.settings))
        pinned_hashes: dict[int, str] = {}
        for version, ref in pinned.versions:
            for obj in (await attacher.attach(pinned.dataset_uuid, version, ref, None)).objects:
                table = _read(obj, True, 0, HEAD + 1)
                numbers, hashes = table.column("block_number").to_pylist(), table.column("block_hash").to_pylist()
                pinned_hashes.update({int(n): "0x" + bytes(b).hex() for n, b in zip(numbers, hashes, strict=True)})
        assert [pinned_hashes[n] for n in range(HEAD + 1)] == before

        # The replaced versions are no longer resolved; the invalidation names old and new.
        new_blocks = await _published_versions(db, "tip.blocks")
        new_txs = await _published_versions(db, "tip.transactions")
        invalid = await db.fetch(
            "SELECT dataset_uuid::text, replaced_version::text, new_version::text, range_start, range_end, reason "
            "FROM data_invalidations ORDER BY range_start, dataset_uuid"
        )
        assert invalid and {r["reason"] for r in invalid} == {"reorg"}
        replaced = {r["replaced_version"] for r in invalid}
        renewed = {r["new_version"] for r in invalid}
        assert replaced <= old_blocks | old_txs and not replaced & (new_blocks | new_txs)
        assert renewed <= new_blocks | new_txs
        # Both streams' ranges holding HEAD-2 .. HEAD were replaced, none wholly below the fork.
        assert min(r["range_start"] for r in invalid) <= HEAD - 2
        assert all(r["range_end"] > HEAD - 2 for r in invalid)
        assert len({r["dataset_uuid"] for r in invalid}) == 2
        # The repair tasks went through the normal completion path: completed, with their
        # declared versions registered as produced by them.
        produced = await db.fetchval(
            "SELECT count(*) FROM chain_sync_repairs p JOIN tasks t ON t.id = p.task_id "
            "JOIN dataset_versions v ON v.producer_task_id = t.id AND v.dataset_version = p.new_version "
            "WHERE t.status = 'completed'"
        )
        assert produced == len(invalid)

        # The sync goes on following the head on the new chain.
        node.mine(4)
        await _synced_to(admin, "tip", HEAD + 5)
        assert (await admin.verify(ORG, "tip", 0, HEAD + 5)).difference_count == 0


async def test_reorg_deeper_than_the_maximum_stops_the_job(
    running: RunningPlatform, node: AnvilNode, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, follow_yaml("shallow", max_depth=2))
        await _synced_to(admin, "shallow", HEAD + 1)
        await _recorded_to(db, HEAD + 1)
        versions = await _published_versions(db, "shallow.blocks")
        # Only the window the walk back needs stays recorded (2 x max_reorg_depth below the tip).
        await eventually(lambda: _hashes_within(db, HEAD - 4, HEAD), timeout=10, interval=0.1)
        # A job synced before anything was recorded (as before migration 0014) ends with the
        # same window recorded (the watcher starts at the top: not observable from here).
        await db.execute("DELETE FROM chain_sync_block_hashes")
        await eventually(lambda: _hashes_within(db, HEAD - 4, HEAD), timeout=10, interval=0.1)
        tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
        node.rpc("anvil_reorg", 3, [[tx, 0]])

        async def stopped() -> pb.ChainSyncStatus | None:
            job = (await admin.status(ORG, "shallow"))[0]
            return job if job.reorgs.stopped_reason else None

        job = await eventually(stopped, timeout=30, interval=0.1)
        assert job.paused and job.reorgs.stopped_reason == "REORG_TOO_DEEP"
        assert job.reorgs.recent[0].status == "too_deep" and job.reorgs.ranges_repaired == 0
        assert all(s.last_error == "reorg/REORG_TOO_DEEP" or s.last_error == "" for s in job.streams)
        assert "stopped: REORG_TOO_DEEP" in render_status([job])
        # Nothing guessed: no repair, no invalidation, the published versions unchanged.
        assert await db.fetchval("SELECT count(*) FROM chain_sync_repairs") == 0
        assert await db.fetchval("SELECT count(*) FROM data_invalidations") == 0
        assert await _published_versions(db, "shallow.blocks") == versions
        # Resuming does not get past it: the detector stops the job again.
        await admin.resume(ORG, "shallow")

        async def stopped_again() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_reorgs WHERE status = 'too_deep'") >= 2)

        await eventually(stopped_again, timeout=30, interval=0.1)
        assert (await admin.status(ORG, "shallow"))[0].paused


async def _start(settings: Settings, url: str, worker: bool, max_attempts: int = 3) -> RunningPlatform:
    fast = replace(
        settings,
        rpc_pools={"local": url},
        dispatcher=replace(
            settings.dispatcher,
            planner_interval_seconds=0.05,
            head_observer_interval_seconds=0.2,
            default_max_attempts=max_attempts,
        ),
    )
    return await start_platform(fast, migrate=False, run_worker=worker)


async def test_a_repair_task_failed_for_good_is_shown_and_resume_retries_it(
    settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    synced = await _start(settings, node.url, worker=True)
    try:
        async with grpc.aio.insecure_channel(synced.addr) as ch:
            admin = _admin(ch, settings)
            await admin.apply(ORG, follow_yaml("tip"))
            await _synced_to(admin, "tip", HEAD + 1)
            await _recorded_to(db, HEAD + 1)
    finally:
        await synced.stop(grace=0.5)
    # No worker, one attempt per task: the repair's first task is failed by hand, as a
    # worker whose extraction failed would complete it.
    idle = await _start(settings, node.url, worker=False, max_attempts=1)
    try:
        async with grpc.aio.insecure_channel(idle.addr) as ch:
            admin = _admin(ch, settings)
            tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
            node.rpc("anvil_reorg", 3, [[tx, 0]])

            async def repair_task() -> str | None:
                task = await db.fetchval("SELECT task_id::text FROM chain_sync_repairs ORDER BY range_start LIMIT 1")
                return str(task) if task else None

            task_id = await eventually(repair_task, timeout=30, interval=0.05)
            worker = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
            claimed = await worker.claim(task_id, "w-test")
            assert claimed.WhichOneof("result") == "claimed"
            ref = TaskRef(task_id, claimed.claimed.attempt, claimed.claimed.lease_token)
            await worker.complete(
                ref,
                claimed.claimed.capability_token,
                dispatcher_pb2.COMPLETION_STATUS_FAILED,
                error_message="rpc/CRYO_FAILED: the node said no",
            )
            job = (await admin.status(ORG, "tip"))[0]
            assert job.reorgs.repairing and job.reorgs.repair_error == "rpc/CRYO_FAILED"
            assert "repair failed: rpc/CRYO_FAILED" in render_status([job])
            assert await db.fetchval("SELECT count(*) FROM data_invalidations") == 0  # nothing cut over
            await admin.resume(ORG, "tip")
            assert await db.fetchval("SELECT status FROM tasks WHERE id = $1::uuid", task_id) == "queued"
            assert not (await admin.status(ORG, "tip"))[0].reorgs.repair_error
    finally:
        await idle.stop(grace=0.5)
    finishing = await _start(settings, node.url, worker=True)
    try:
        async with grpc.aio.insecure_channel(finishing.addr) as ch:
            admin = _admin(ch, settings)

            async def repaired() -> bool:
                return bool((await admin.status(ORG, "tip"))[0].reorgs.ranges_repaired)

            await eventually(repaired, timeout=60, interval=0.1)
            assert (await admin.verify(ORG, "tip", 0, HEAD + 1)).difference_count == 0
    finally:
        await finishing.stop(grace=0.5)


async def test_two_watchers_racing_start_one_repair(
    settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    """Two Dispatchers' watchers see the same reorg at once: one repair is recorded (the
    other's transaction writes nothing), with one task per affected range."""
    synced = await _start(settings, node.url, worker=True)
    platform_settings = synced.settings
    try:
        async with grpc.aio.insecure_channel(synced.addr) as ch:
            admin = _admin(ch, settings)
            await admin.apply(ORG, follow_yaml("tip"))
            await _synced_to(admin, "tip", HEAD + 1)
            await _recorded_to(db, HEAD + 1)
    finally:
        await synced.stop(grace=0.5)
    node.rpc("anvil_reorg", 3, [])
    assert settings.database_url
    pool = await create_pool(settings.database_url, min_size=2, max_size=4)
    try:
        stores = object_stores(platform_settings)
        verifier = ChainVerifier(
            ChainSyncRepository(pool), DatasetRepository(pool), DatasetAttacher(stores), {"local": node.url}
        )
        registry = CollectorRegistry()
        metrics = ChainSyncMetrics(registry)
        watchers = [
            ReorgWatcher(
                ReorgRepository(pool),
                verifier,
                DatasetAttacher(stores),
                {"local": node.url},
                3,
                lambda: None,
                metrics=metrics,
            )
            for _ in range(2)
        ]
        for _ in range(3):
            await asyncio.gather(*(w.step() for w in watchers))
    finally:
        await pool.close()
    assert await db.fetchval("SELECT count(*) FROM chain_sync_reorgs") == 1
    assert registry.get_sample_value("trace_chain_sync_reorgs_total", {"outcome": "repairing"}) == 1
    rows = await db.fetch("SELECT task_id, range_start, dataset_key FROM chain_sync_repairs")
    assert len(rows) >= 2 and len({(r["range_start"], r["dataset_key"]) for r in rows}) == len(rows)
    tasks = {r["task_id"] for r in rows}
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[])", list(tasks)) == len(tasks)
    # Every repair task declares the versions its rows name.
    declared = await db.fetch(
        "SELECT p.new_version::text AS v, t.declared_outputs::text AS d FROM chain_sync_repairs p "
        "JOIN tasks t ON t.id = p.task_id"
    )
    assert all(r["v"] in r["d"] for r in declared)


async def test_a_reorg_to_a_shorter_chain_waits_for_the_height_then_repairs(
    settings: Settings, db: asyncpg.Connection
) -> None:
    node = AnvilNode.start(prune_history=False)
    try:
        node.mine(HEAD - 3)
        snapshot = node.rpc("evm_snapshot")
        node.mine(3)
        running = await _start(settings, node.url, worker=True)
        try:
            async with grpc.aio.insecure_channel(running.addr) as ch:
                admin = _admin(ch, settings)
                await admin.apply(ORG, follow_yaml("tip"))
                await _synced_to(admin, "tip", HEAD + 1)
                await _recorded_to(db, HEAD + 1)
                assert node.rpc("evm_revert", snapshot) and node.block_number() == HEAD - 3
                await asyncio.sleep(1.5)  # several watcher passes: the published tip is not on the node
                job = (await admin.status(ORG, "tip"))[0]
                assert not job.HasField("reorgs") and not job.paused  # waits; no repair that would fail
                node.mine(6)  # a new chain, past the published tip: blocks HEAD-2 .. HEAD differ

                async def repaired() -> pb.ChainSyncStatus | None:
                    job = (await admin.status(ORG, "tip"))[0]
                    return job if job.reorgs.ranges_repaired and not job.reorgs.repairing else None

                job = await eventually(repaired, timeout=30, interval=0.1)
                assert job.reorgs.recent[-1].fork_block == HEAD - 2
                await _synced_to(admin, "tip", HEAD + 4)
                check = await admin.verify(ORG, "tip", 0, HEAD + 4)
                assert check.difference_count == 0, list(check.differences)
        finally:
            await running.stop(grace=0.5)
    finally:
        node.stop()
