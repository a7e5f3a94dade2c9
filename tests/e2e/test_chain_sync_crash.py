"""A Dispatcher killed with SIGKILL mid-sync, restarted, finishes the sync: no missing or
duplicate ranges, no duplicate dataset versions, every block exactly once."""

from __future__ import annotations

import itertools
import signal
import subprocess

import asyncpg
import grpc

from tests.anvil import AnvilNode, free_port
from tests.conftest import eventually
from tests.integration.test_chain_sync import sync_yaml
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import Settings

from .conftest import spawn, trace_env, wait_for_line

ORG = "00000000-0000-0000-0000-000000000001"
BLOCKS = 60


async def test_dispatcher_sigkill_mid_sync_finishes_without_gaps_or_duplicates(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    node = AnvilNode.start()
    try:
        emitter = node.deploy_log_emitter()
        node.send(to=emitter, gas=hex(100_000))
        node.mine(BLOCKS + 5 - node.block_number())
        listen = f"127.0.0.1:{free_port()}"
        env = trace_env(
            settings, TRACE_RPC_POOL_LOCAL_URL=node.url, TRACE_PLANNER_INTERVAL_SECONDS="0.05", TRACE_LEASE_SECONDS="5"
        )
        dispatcher = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(dispatcher)
        wait_for_line(dispatcher, r"dispatcher serving on (\S+)")
        worker = spawn(["worker", "run", "--addr", listen], dict(env, TRACE_WORKER_CONCURRENCY="2"))
        procs.append(worker)

        async with grpc.aio.insecure_channel(listen) as ch:
            assert settings.admin_token
            await ChainSyncClient(ch, admin_token=settings.admin_token).apply(
                ORG, sync_yaml("crash", to_block=BLOCKS, chunk=4, inflight=2)
            )

        async def some_done() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_ranges WHERE status = 'completed'") >= 4)

        await eventually(some_done, timeout=60, interval=0.02)
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait(timeout=10)
        total_ranges = await db.fetchval("SELECT count(*) FROM chain_sync_ranges")
        assert await db.fetchval("SELECT completed_at FROM chain_sync_jobs") is None

        restarted = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(restarted)
        wait_for_line(restarted, r"dispatcher serving on (\S+)")

        async def job_done() -> bool:
            return bool(await db.fetchval("SELECT completed_at IS NOT NULL FROM chain_sync_jobs"))

        # Well under the 60 s queue visibility: wake-ups that met the dead Dispatcher come back
        # within a second instead of stalling until their visibility runs out.
        await eventually(job_done, timeout=40, interval=0.2)
        assert await db.fetchval("SELECT count(*) FROM chain_sync_ranges") > total_ranges  # planning went on

        ranges = await db.fetch(
            "SELECT dataset_key, range_start, range_end, status, dataset_version FROM chain_sync_ranges "
            "ORDER BY dataset_key, range_start"
        )
        for _, group in itertools.groupby(ranges, key=lambda r: r["dataset_key"]):
            spans = list(group)
            assert spans[0]["range_start"] == 0 and spans[-1]["range_end"] == BLOCKS
            assert all(a["range_end"] == b["range_start"] for a, b in itertools.pairwise(spans))
            assert all(r["status"] == "completed" for r in spans)
        versions = await db.fetch("SELECT dataset_version FROM dataset_versions")
        assert len(versions) == len(ranges) == len({r["dataset_version"] for r in ranges})
        blocks_uuid = await db.fetchval("SELECT dataset_uuid FROM chain_sync_streams WHERE dataset_key = 'blocks'")
        covered = await db.fetch(
            "SELECT range_start, range_end FROM dataset_versions WHERE dataset_uuid = $1 ORDER BY range_start",
            blocks_uuid,
        )
        assert sum(r["range_end"] - r["range_start"] for r in covered) == BLOCKS
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=15) == 0
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
    finally:
        node.stop()
