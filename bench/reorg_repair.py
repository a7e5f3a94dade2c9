"""Reorg repair time: from ``anvil_reorg`` to a query that sees the repaired blocks.

Full stack in this process (Dispatcher, planner, head observer, reorg watcher, worker with
real Cryo, Query Service) against a fresh PostgreSQL database and anvil at
``--block-time 1``. A follow_head job (tail_lag 0; blocks and transactions streams) is
applied and left to catch up. Then, ``--rounds`` times: a depth ``--depth`` reorg with a
changed transaction is made on the node, the node's new hashes of the replaced blocks are
read, and the Query Service is asked every 20 ms (a new query each time, user token) for
those blocks' hashes until it answers with the node's; the time from the reorg call to
that answer is the round's number. Settings are the platform's defaults (head observer
and reorg watcher every ``--observer-interval`` s, default 1.0 as in production) except
the polling of the test harness.

    .venv/bin/python bench/reorg_repair.py [--rounds 5] [--depth 3] [--observer-interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from bench_support import drop_db, dsn_for, fresh_db

from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.app import start_platform
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import (
    DispatcherSettings,
    QuerySettings,
    Settings,
    TokenSettings,
    UserAuthSettings,
    WorkerSettings,
)
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.lite.anvil import AnvilNode

ORG = "00000000-0000-4000-8000-0000000000b1"
JOB = """
kind: chain_sync
name: tip
chain_id: 31337
mode:
  kind: follow_head
  from_block: 0
  tail_lag: 0
  head_poll_interval_seconds: 1
  max_head_age_seconds: 30
streams:
  blocks: {cryo_dataset_name: blocks, rpc_pool: local, chunk_size: 4, max_inflight: 4}
  transactions: {cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 4, max_inflight: 4}
"""


def _settings(db: str, tmp: Path, url: str, observer: float) -> Settings:
    return Settings(
        database_url=dsn_for(db),
        listen="127.0.0.1:0",
        data_dir=tmp,
        worker_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        scratch_uri=f"file://{tmp}/scratch",
        db_pool_min=1,
        db_pool_max=8,
        tokens=TokenSettings(key_dir=tmp / "keys", ttl_seconds=300),
        dispatcher=DispatcherSettings(head_observer_interval_seconds=observer),
        worker=WorkerSettings(worker_id="bench-worker", concurrency=4),
        query=QuerySettings(slots=2, memory_limit="512MB", threads=1),
        user_auth=UserAuthSettings(issuer="trace-bench", hs256_secret=secrets.token_urlsafe(32)),
        rpc_pools={"local": url},
    )


async def _until(check, timeout: float, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)


async def _round(admin: ChainSyncClient, user: ApiQueryClient, node: AnvilNode, depth: int) -> float:
    """One reorg on a caught-up job; seconds until a new query answers with the node's hashes."""

    async def caught_up() -> bool:
        job = (await admin.status(ORG, "tip"))[0]
        return job.synced_to >= node.block_number() and not job.reorgs.repairing

    await _until(caught_up, 60)
    await asyncio.sleep(1.5)  # the watcher has recorded what was just published
    tip = (await admin.status(ORG, "tip"))[0].synced_to - 1
    tx = {"from": node.accounts[2], "to": node.accounts[3], "value": hex(10**15)}
    t0 = time.monotonic()
    node.rpc("anvil_reorg", depth, [[tx, 0]])
    # The replaced blocks that were published: tip - depth + 1 .. tip (blocks mined after
    # the call are new, not repaired).
    wanted = {n: node.rpc("eth_getBlockByNumber", hex(n), False)["hash"] for n in range(tip - depth + 1, tip + 1)}
    numbers = ", ".join(str(n) for n in wanted)

    async def repaired() -> bool:
        rows = await user.query(
            "tip.blocks", f"SELECT block_number, block_hash FROM dataset WHERE block_number IN ({numbers})"
        )
        return {int(r[0]): "0x" + bytes(r[1]).hex() for r in rows.rows} == wanted

    await _until(repaired, 60, interval=0.02)
    return time.monotonic() - t0


async def run(rounds: int, depth: int, observer: float) -> dict[str, object]:
    node = AnvilNode.start("--block-time", "1", prune_history=False)
    db = await fresh_db("trace_bench_reorg")
    tmp = Path(tempfile.mkdtemp(prefix="trace-bench-reorg-"))
    settings = _settings(db, tmp, node.url, observer)
    running = await start_platform(settings, migrate=False, run_worker=True)
    times: list[float] = []
    try:
        pool = await create_pool(dsn_for(db), min_size=1, max_size=1)
        try:
            await IdentityRepository(pool).ensure_member(ORG, "bench-org", "ada", "viewer")
        finally:
            await pool.close()
        assert settings.user_auth.hs256_secret and settings.admin_token
        token = issue_user_token(settings.user_auth.hs256_secret, issuer="trace-bench", subject="ada", org_id=ORG)
        async with grpc.aio.insecure_channel(running.addr) as ch:
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            user = ApiQueryClient(ch, token=token)
            await admin.apply(ORG, JOB)
            for _ in range(rounds):
                times.append(await _round(admin, user, node, depth))
                print(f"round {len(times)}: {times[-1]:.2f} s", file=sys.stderr)
            final = (await admin.status(ORG, "tip"))[0]
            check = await admin.verify(ORG, "tip")
            result: dict[str, object] = {
                "rounds": rounds,
                "depth": depth,
                "observer_interval_s": observer,
                "repair_to_query_s": [round(t, 3) for t in times],
                "median_s": round(statistics.median(times), 3),
                "max_s": round(max(times), 3),
                "reorgs_seen": final.reorgs.seen,
                "ranges_repaired": final.reorgs.ranges_repaired,
                "verify_differences_after": check.difference_count,
            }
    finally:
        await running.stop(grace=0.5)
        node.stop()
        await drop_db(db)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--observer-interval", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.rounds, args.depth, args.observer_interval)), indent=2))


if __name__ == "__main__":
    main()
