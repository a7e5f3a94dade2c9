"""SIGKILL during a compaction: the worker dies once the sync is done, the Dispatcher plans
the compactions (tasks created, none run) and is killed too; at that moment every block is
in exactly one ledger range. After a restart the compactions finish: one merged range per
bucket, every block exactly once, no compaction planned twice, the data equal to the node's."""

from __future__ import annotations

import itertools
import signal
import subprocess

import asyncpg
import grpc

from tests.anvil import AnvilNode, free_port
from tests.conftest import eventually
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import Settings

from .conftest import spawn, trace_env, wait_for_line

ORG = "00000000-0000-0000-0000-000000000001"
BLOCKS = 40
TARGET = 20
JOB = f"""
kind: chain_sync
name: crash
chain_id: 31337
mode: {{kind: fixed_target, from_block: 0, to_block: {BLOCKS}}}
streams:
  blocks: {{cryo_dataset_name: blocks, rpc_pool: local, chunk_size: 4, max_inflight: 4}}
  transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 4, max_inflight: 4}}
compaction: {{target_blocks: {TARGET}}}
"""


async def _every_block_once(db: asyncpg.Connection) -> None:
    ranges = await db.fetch(
        "SELECT dataset_key, range_start, range_end, status FROM chain_sync_ranges ORDER BY dataset_key, range_start"
    )
    for key, group in itertools.groupby(ranges, key=lambda r: r["dataset_key"]):
        spans = list(group)
        assert spans[0]["range_start"] == 0 and spans[-1]["range_end"] == BLOCKS, key
        assert all(a["range_end"] == b["range_start"] for a, b in itertools.pairwise(spans)), key
        assert all(r["status"] == "completed" for r in spans), key
    for name in ("crash.blocks", "crash.transactions"):
        resolved = await DatasetRepository(db).resolve_published(ORG, name)  # type: ignore[arg-type]
        assert resolved is not None
        covered = sorted(n for start, end in resolved.ranges for n in range(start or 0, end or 0))
        assert covered == list(range(BLOCKS)), name


async def test_sigkill_during_a_compaction_leaves_no_gap_and_no_duplicate(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]]
) -> None:
    node = AnvilNode.start()
    try:
        for i in range(3):
            node.send(to=node.accounts[1], value=hex(10**15 + i))
        node.mine(BLOCKS + 5 - node.block_number())
        listen = f"127.0.0.1:{free_port()}"
        env = trace_env(
            settings,
            TRACE_RPC_POOL_LOCAL_URL=node.url,
            TRACE_PLANNER_INTERVAL_SECONDS="0.05",
            TRACE_HEAD_OBSERVER_INTERVAL_SECONDS="0.2",  # compaction looked for every 2 s
            TRACE_LEASE_SECONDS="5",
        )
        dispatcher = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(dispatcher)
        wait_for_line(dispatcher, r"dispatcher serving on (\S+)")
        worker = spawn(["worker", "run", "--addr", listen], dict(env, TRACE_WORKER_CONCURRENCY="2"))
        procs.append(worker)
        assert settings.admin_token
        async with grpc.aio.insecure_channel(listen) as ch:
            await ChainSyncClient(ch, admin_token=settings.admin_token).apply(ORG, JOB)

        async def synced() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_jobs WHERE completed_at IS NOT NULL"))

        await eventually(synced, timeout=60, interval=0.02)
        worker.send_signal(signal.SIGKILL)  # no compaction can run before the Dispatcher dies
        worker.wait(timeout=10)

        async def planned() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'pending'"))

        await eventually(planned, timeout=30, interval=0.02)
        dispatcher.send_signal(signal.SIGKILL)
        dispatcher.wait(timeout=10)
        await _every_block_once(db)  # mid-compaction: each bucket is its old ranges or its merged one

        restarted = spawn(["dispatcher", "serve", "--listen", listen], env)
        procs.append(restarted)
        wait_for_line(restarted, r"dispatcher serving on (\S+)")
        worker2 = spawn(["worker", "run", "--addr", listen], dict(env, TRACE_WORKER_CONCURRENCY="2"))
        procs.append(worker2)

        async def compacted() -> bool:
            n = await db.fetchval("SELECT count(*) FROM chain_sync_compactions WHERE status = 'cut_over'")
            return bool(n == 2 * BLOCKS // TARGET)

        await eventually(compacted, timeout=60, interval=0.1)
        assert await db.fetchval("SELECT count(*) FROM chain_sync_compactions") == 2 * BLOCKS // TARGET
        await _every_block_once(db)
        assert await db.fetchval("SELECT count(*) FROM chain_sync_ranges") == 2 * BLOCKS // TARGET
        async with grpc.aio.insecure_channel(listen) as ch:
            check = await ChainSyncClient(ch, admin_token=settings.admin_token).verify(ORG, "crash", 0, BLOCKS)
        assert check.difference_count == 0, list(check.differences)
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=15) == 0
        worker2.send_signal(signal.SIGTERM)
        worker2.wait(timeout=15)
    finally:
        node.stop()
