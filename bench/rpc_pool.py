"""RPC pool throughput: a chain_sync job over two rate-limited endpoints vs plain Cryo on one.

Two loopback proxies (tests/rpc_proxy.py) in front of one anvil node each allow R requests
in any one second (more: 429, counted). The platform (Lite composition, in this process,
with its worker: real Cryo) syncs the ``blocks`` dataset over [0, N) from a pool of those
two endpoints, each configured with R requests per second and C concurrent requests; the
time runs from the apply to the job's completion (status polled every 0.1 s), and the
published blocks are checked through the Query Service (every block exactly once).
Ratio: blocks per second / (2 R) (the blocks dataset costs one request per block).

Baseline in the same run: plain Cryo (one ``cryo.freeze`` child as the runner calls it)
over the same [0, N) with ``requests_per_second = R`` and ``max_concurrent_requests = C``
against one endpoint, with the runner's ``max_retries`` (3) and with 30; its ratio is to
R (its own limit) and to 2 R (what the pool reaches for). Cryo's limiter lets bursts
through that a per-second limit answers with 429, and a 429 fails its chunk; so Cryo is
also measured against the same endpoint counting but not enforcing (its own ceiling).
The proxies run in child processes, so their clocks are not held up by the platform.

    .venv/bin/python bench/rpc_pool.py [--blocks 1000] [--rps 50] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/rpc_proxy.py

import grpc
from bench_support import drop_db, dsn_for, fresh_db

from tests.anvil import AnvilNode
from tests.integration.conftest import ORG, user_client
from tests.rpc_proxy import ProxyProcess
from trace_platform.adapters.extract.cryo_runner import CryoRequest, CryoRunner
from trace_platform.adapters.rpc.pool_proxy import pool_status
from trace_platform.app import start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import (
    DispatcherSettings,
    QuerySettings,
    Settings,
    TokenSettings,
    UserAuthSettings,
    WorkerSettings,
)
from trace_platform.core.errors import TraceError
from trace_platform.core.planner import BlockRange
from trace_platform.core.rpc_pools import RpcEndpoint, RpcPool


def _yaml(n: int, chunk: int, inflight: int) -> str:
    return f"""
kind: chain_sync
name: bench
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: {n}
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: pool
    chunk_size: {chunk}
    max_inflight: {inflight}
"""


def _settings(dsn: str, tmp: Path, pool: RpcPool) -> Settings:
    return Settings(
        database_url=dsn,
        listen="127.0.0.1:0",
        data_dir=tmp,
        worker_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        scratch_uri=f"file://{tmp}/scratch",
        tokens=TokenSettings(key_dir=tmp / "keys", ttl_seconds=300),
        dispatcher=DispatcherSettings(planner_interval_seconds=0.05, head_observer_interval_seconds=1.0),
        worker=WorkerSettings(worker_id="bench-worker", concurrency=8, poll_interval_seconds=0.05),
        query=QuerySettings(slots=2, memory_limit="512MB", threads=1),
        user_auth=UserAuthSettings(issuer="trace-bench", hs256_secret=secrets.token_urlsafe(32)),
        rpc_pools={"pool": pool},
    )


async def _completed(admin: ChainSyncClient) -> None:
    while True:
        jobs = await admin.status(ORG, "bench")
        if jobs and jobs[0].completed:
            return
        await asyncio.sleep(0.1)


async def pool_sync(node: AnvilNode, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    a, b = ProxyProcess.start(node.url, rps=args.rps), ProxyProcess.start(node.url, rps=args.rps)
    pool = RpcPool("pool", tuple(RpcEndpoint(p.url, args.rps, args.concurrency) for p in (a, b)), probe_seconds=2.0)
    db = await fresh_db("bench_rpc_pool")
    settings = _settings(dsn_for(db), tmp / "pool", pool)
    running = await start_platform(settings, migrate=False, run_worker=True)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            a.reset()
            b.reset()
            started, wall = time.perf_counter(), time.time()
            await admin.apply(ORG, _yaml(args.blocks, args.chunk, args.inflight))
            await _completed(admin)
            elapsed = time.perf_counter() - started
            seen_then = [a.counts, b.counts]
            user = await user_client(ch, settings)
            rows = await user.query("bench.blocks", "SELECT count(*), count(DISTINCT block_number) FROM dataset")
            assert rows.rows == [[args.blocks, args.blocks]], rows.rows  # every block exactly once
    finally:
        await running.stop(grace=0.5)
        endpoints = pool_status({"pool": pool})
        a.stop()
        b.stop()
        await drop_db(db)
    bps = args.blocks / elapsed
    seen = seen_then
    span = max(c.last_at for c in seen) - min(c.first_at for c in seen)
    first_request = min(c.first_at for c in seen) - wall
    return {
        "seconds": round(elapsed, 2),
        "endpoint_traffic_seconds": round(span, 2),
        "first_request_after_apply_seconds": round(first_request, 2),
        "requests_per_second_while_active": round(sum(c.arrivals for c in seen) / span, 1),
        "blocks_per_second": round(bps, 1),
        "combined_limit": 2 * args.rps,
        "ratio_to_combined_limit": round(bps / (2 * args.rps), 3),
        # the same over the time the endpoints carried traffic (without the wait for the
        # first head observation and the completion after the last range)
        "ratio_while_endpoints_active": round(args.blocks / span / (2 * args.rps), 3),
        "endpoints": [
            {
                "max_per_second_seen": c.max_per_second,
                "max_inflight_seen": c.max_inflight,
                "requests": c.arrivals,
                "429s": c.throttled,
                "blocks_served": sum(c.blocks_served.values()),
                "pool_counted": {"requests": e.requests, "errors": e.errors, "throttles": e.throttles},
            }
            for c, e in zip(seen, endpoints, strict=True)
        ],
    }


async def plain_cryo(
    node: AnvilNode, args: argparse.Namespace, tmp: Path, retries: int, enforce: bool = True
) -> dict[str, object]:
    proxy = ProxyProcess.start(node.url, rps=args.rps if enforce else None)
    runner = CryoRunner(tmp / "plain")
    req = CryoRequest(
        str(uuid.uuid4()),
        1,
        "blocks",
        BlockRange(0, args.blocks),
        proxy.url,
        31337,
        requests_per_second=int(args.rps),
        max_concurrent_requests=args.concurrency,
        max_retries=retries,
    )
    failed = ""
    try:
        started = time.perf_counter()
        try:
            (await runner.run(req)).cleanup()
        except TraceError as e:
            failed = e.reason  # the 429s it drew exhausted its retries: no output
        elapsed = time.perf_counter() - started
        counts = proxy.counts
    finally:
        proxy.stop()
    bps = 0.0 if failed else args.blocks / elapsed
    return {
        "endpoint_enforces_limit": enforce,
        "max_retries": retries,
        "failed": failed,
        "seconds": round(elapsed, 2),
        "blocks_per_second": round(bps, 1),
        "ratio_to_own_limit": round(bps / args.rps, 3),
        "ratio_to_combined_limit": round(bps / (2 * args.rps), 3),
        "max_per_second_seen": counts.max_per_second,
        "requests": counts.arrivals,
        "429s": counts.throttled,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--rps", type=float, default=50.0, help="R: each endpoint's limit")
    parser.add_argument("--concurrency", type=int, default=8, help="C: each endpoint's concurrency")
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--inflight", type=int, default=4)
    args = parser.parse_args()
    node = AnvilNode.start()
    try:
        node.mine(args.blocks + 5)
        with tempfile.TemporaryDirectory(prefix="bench-rpc-pool-") as tmp:
            baseline = [await plain_cryo(node, args, Path(tmp), r) for r in (3, 30)]
            baseline.append(await plain_cryo(node, args, Path(tmp), 3, enforce=False))
            pooled = await pool_sync(node, args, Path(tmp))
    finally:
        node.stop()
    print(
        json.dumps(
            {
                "blocks": args.blocks,
                "R": args.rps,
                "C": args.concurrency,
                "pool_of_two": pooled,
                "plain_cryo_one_endpoint": baseline,
                "target": "pool ratio_to_combined_limit >= 0.8",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
