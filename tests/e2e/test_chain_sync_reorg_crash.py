"""SIGKILL during a reorg repair: the Dispatcher dies while the repair is in progress (its
tasks created, not finished; the worker killed too), is restarted, and the repair
finishes: every block published exactly once and equal to the node's, one reorg recorded,
one invalidation per replaced range."""

from __future__ import annotations

import itertools
import signal
import subprocess

import asyncpg
import grpc

from tests.anvil import AnvilNode, free_port
from tests.conftest import eventually
from tests.integration.test_chain_sync_reorg import HEAD, follow_yaml
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import Settings

from .conftest import spawn, trace_env, wait_for_line

ORG = "00000000-0000-0000-0000-000000000001"


async def test_sigkill_during_a_reorg_repair_leaves_no_gap_and_no_duplicate(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    node = AnvilNode.start(prune_history=False)
    try:
        node.mine(HEAD)
        listen = f"127.0.0.1:{free_port()}"
        env = trace_env(
            settings,
            TRACE_RPC_POOL_LOCAL_URL=node.url,
            TRACE_PLANNER_INTERVAL_SECONDS="0.05",
            TRACE_HEAD_OBSERVER_INTERVAL_SECONDS="0.2",
            TRACE_LEASE_SECONDS="5",
        )
        dispatcher = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(dispatcher)
        wait_for_line(dispatcher, r"dispatcher serving on (\S+)")
        worker = spawn(["worker", "run", "--addr", listen], dict(env, TRACE_WORKER_CONCURRENCY="2"))
        procs.append(worker)
        assert settings.admin_token
        async with grpc.aio.insecure_channel(listen) as ch:
            await ChainSyncClient(ch, admin_token=settings.admin_token).apply(ORG, follow_yaml("tip"))

        async def recorded() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_block_hashes") >= HEAD + 1)

        await eventually(recorded, timeout=60, interval=0.05)
        worker.send_signal(signal.SIGKILL)  # the repair cannot finish before the Dispatcher dies
        worker.wait(timeout=10)
        tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
        node.rpc("anvil_reorg", 3, [[tx, 0]])

        async def repairing() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_reorgs WHERE status = 'repairing'"))

        await eventually(repairing, timeout=30, interval=0.02)
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait(timeout=10)
        assert await db.fetchval("SELECT count(*) FROM data_invalidations") == 0  # nothing cut over yet

        restarted = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(restarted)
        wait_for_line(restarted, r"dispatcher serving on (\S+)")
        worker2 = spawn(["worker", "run", "--addr", listen], dict(env, TRACE_WORKER_CONCURRENCY="2"))
        procs.append(worker2)

        async def repaired() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_reorgs WHERE status = 'repaired'"))

        await eventually(repaired, timeout=60, interval=0.1)
        assert await db.fetchval("SELECT count(*) FROM chain_sync_reorgs") == 1
        repairs = await db.fetchval("SELECT count(*) FROM chain_sync_repairs")
        assert repairs >= 2 and await db.fetchval("SELECT count(*) FROM data_invalidations") == repairs

        # The ledger: contiguous, one completed version per range and stream.
        ranges = await db.fetch(
            "SELECT dataset_key, range_start, range_end, status FROM chain_sync_ranges "
            "ORDER BY dataset_key, range_start"
        )
        for _, group in itertools.groupby(ranges, key=lambda r: r["dataset_key"]):
            spans = [r for r in group if r["range_start"] <= HEAD]
            assert spans[0]["range_start"] == 0 and spans[-1]["range_end"] > HEAD
            assert all(a["range_end"] == b["range_start"] for a, b in itertools.pairwise(spans))
            assert all(r["status"] == "completed" for r in spans)
        # What a new query reads: every block below HEAD + 1 in exactly one version, and
        # every published block equal to the node's (the verify RPC of the restarted Dispatcher).
        for name in ("tip.blocks", "tip.transactions"):
            resolved = await DatasetRepository(db).resolve_published(ORG, name)  # type: ignore[arg-type]
            assert resolved is not None
            covered = sorted(n for start, end in resolved.ranges for n in range(start or 0, end or 0) if n <= HEAD)
            assert covered == list(range(HEAD + 1)), name
        async with grpc.aio.insecure_channel(listen) as ch:
            check = await ChainSyncClient(ch, admin_token=settings.admin_token).verify(ORG, "tip", 0, HEAD + 1)
        assert check.difference_count == 0, list(check.differences)
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=15) == 0
        worker2.send_signal(signal.SIGTERM)
        worker2.wait(timeout=15)
    finally:
        node.stop()
