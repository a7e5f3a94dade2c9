"""RPC pools against real anvil and real Cryo, through rate-limited loopback proxies
(tests/rpc_proxy.py, in child processes): the sync spreads within each endpoint's limits, backs off on 429,
moves work off an endpoint that errors or lags and brings it back, and the endpoints'
keys appear in no log record and no PostgreSQL row."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace

import asyncpg
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, user_client
from tests.rpc_proxy import ProxyProcess
from trace_platform.adapters.rpc.pool_proxy import EndpointStatus, pool_status
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import Settings
from trace_platform.core.rpc_pools import RpcEndpoint, RpcPool
from trace_platform.views.live_status import render_status
from trace_platform.views.rpc_endpoints import render_endpoints

CHAIN_BLOCKS = 130


def sync_yaml(name: str, to_block: int, chunk: int = 20, inflight: int = 4) -> str:
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: {to_block}
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: pool
    chunk_size: {chunk}
    max_inflight: {inflight}
"""


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    n = AnvilNode.start()
    n.mine(CHAIN_BLOCKS)
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def proxies(node: AnvilNode) -> Iterator[tuple[ProxyProcess, ProxyProcess]]:
    a, b = ProxyProcess.start(node.url, rps=15), ProxyProcess.start(node.url, rps=15)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


async def _platform(settings: Settings, pool: RpcPool) -> RunningPlatform:
    fast = replace(
        settings,
        rpc_pools={"pool": pool},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.5),
    )
    return await start_platform(fast, migrate=False, run_worker=True)


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


async def _sync(running: RunningPlatform, settings: Settings, name: str, to_block: int) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        assert settings.admin_token
        admin = ChainSyncClient(ch, admin_token=settings.admin_token)
        await admin.apply(ORG, sync_yaml(name, to_block))

        async def done() -> bool:
            jobs = await admin.status(ORG, name)
            return bool(jobs and jobs[0].completed)

        await eventually(done, timeout=90, interval=0.2)
        user = await user_client(ch, settings)
        rows = await user.query(f"{name}.blocks", "SELECT block_number FROM dataset ORDER BY 1", limit=10_000)
        assert [r[0] for r in rows.rows] == list(range(to_block))  # every block exactly once


def _status(pool: RpcPool) -> list[EndpointStatus]:
    return pool_status({"pool": pool})


async def _no_secret_anywhere(db: asyncpg.Connection, caplog: pytest.LogCaptureFixture, *keys: str) -> None:
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records  # the platform did log (the check below is not vacuous)
    for key in keys:
        assert key not in text
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )
    assert len(tables) > 5
    for t in tables:
        for key in keys:
            hits = await db.fetchval(f'SELECT count(*) FROM "{t["table_name"]}" x WHERE x::text LIKE $1', f"%{key}%")
            assert hits == 0, t["table_name"]


async def test_sync_spreads_over_the_endpoints_within_their_limits(
    settings: Settings,
    proxies: tuple[ProxyProcess, ProxyProcess],
    db: asyncpg.Connection,
    caplog_all: pytest.LogCaptureFixture,
) -> None:
    a, b = proxies
    pool = RpcPool("pool", (RpcEndpoint(a.url, 15, 3), RpcEndpoint(b.url, 15, 3)), probe_seconds=0.5)
    running = await _platform(settings, pool)
    try:
        await _sync(running, settings, "spread", 120)
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            response = await ChainSyncClient(ch, admin_token=settings.admin_token).status_response(ORG, "")
    finally:
        await running.stop(grace=0.5)
    for p in (a, b):
        assert p.counts.throttled == 0 and p.counts.max_per_second <= 15, p.counts
        assert p.counts.max_inflight <= 3, p.counts
        assert len(p.counts.blocks_served) >= 20, p.counts  # both carried a real share
    served = a.counts.blocks_served + b.counts.blocks_served
    assert set(range(120)) <= set(served)
    status = _status(pool)
    assert [s.state for s in status] == ["healthy", "healthy"]
    assert all(s.requests >= 20 and s.errors == 0 and s.head_block == CHAIN_BLOCKS for s in status)
    await _no_secret_anywhere(db, caplog_all, a.key, b.key)
    # `trace status` shows each endpoint by index and host, with its counters and head.
    shown = [(e.rpc_pool, e.index, e.host, e.state) for e in response.rpc_endpoints]
    assert shown == [("pool", 0, f"127.0.0.1:{a.port}", "healthy"), ("pool", 1, f"127.0.0.1:{b.port}", "healthy")]
    assert all(
        e.requests >= 20 and e.head_block == CHAIN_BLOCKS and e.requests_per_second == 15
        for e in response.rpc_endpoints
    )
    text = render_status(list(response.jobs)) + render_endpoints(response.rpc_endpoints)
    assert "pool #1 127.0.0.1" in text and "throttles" in text
    assert a.key not in str(response) + text and b.key not in str(response) + text


async def test_429s_are_backed_off_and_the_sync_finishes_once(
    settings: Settings, proxies: tuple[ProxyProcess, ProxyProcess], db: asyncpg.Connection
) -> None:
    a, b = proxies
    a.rps = 4  # the provider allows far less than the pool was told
    pool = RpcPool("pool", (RpcEndpoint(a.url, 40, 4), RpcEndpoint(b.url, 15, 3)), probe_seconds=0.5)
    running = await _platform(settings, pool)
    try:
        await _sync(running, settings, "throttled", 100)
    finally:
        await running.stop(grace=0.5)
    assert a.counts.throttled > 0
    assert b.counts.throttled == 0 and b.counts.max_per_second <= 15
    first = _status(pool)[0]
    assert first.throttles > 0 and first.throttles <= a.counts.throttled
    # Backed off (with jitter): a handful of 429s, and the work went to the endpoint that
    # answers; at its configured 40/s it would have drawn hundreds during the sync.
    seen_a, seen_b = a.counts, b.counts
    assert seen_a.throttled < 40 and seen_a.arrivals < seen_b.arrivals, (seen_a, seen_b)


async def test_work_moves_off_an_erroring_or_lagging_endpoint_and_comes_back(
    settings: Settings, proxies: tuple[ProxyProcess, ProxyProcess], caplog_all: pytest.LogCaptureFixture
) -> None:
    a, b = proxies
    a.rps = b.rps = None
    pool = RpcPool("pool", (RpcEndpoint(a.url, 30, 4), RpcEndpoint(b.url, 30, 4)), max_head_lag=5, probe_seconds=0.5)
    a.mode = "error"
    running = await _platform(settings, pool)
    try:
        await _sync(running, settings, "erroring", 60)
        assert not a.counts.blocks_served and a.counts.errors > 0
        assert set(b.counts.blocks_served) >= set(range(60))
        assert _status(pool)[0].state == "down" and _status(pool)[0].errors > 0

        a.mode = "ok"  # recovers: the next probe (every 0.5 s) brings it back

        async def healthy() -> bool:
            return _status(pool)[0].state == "healthy"

        await eventually(healthy, timeout=3, interval=0.1)

        a.mode, a.lag = "lag", 60  # now 60 blocks behind the other

        async def lagging() -> bool:
            return _status(pool)[0].state == "lagging"

        await eventually(lagging, timeout=10, interval=0.1)
        assert _status(pool)[0].head_block == CHAIN_BLOCKS - 60
        a.reset()
        b.reset()
        await _sync(running, settings, "lagging", 120)
        assert not a.counts.blocks_served  # no block from the lagging node
        assert set(b.counts.blocks_served) >= set(range(120))

        a.mode = "ok"
        await eventually(healthy, timeout=10, interval=0.1)
    finally:
        await running.stop(grace=0.5)
    assert any("lagging" in r.getMessage() for r in caplog_all.records)  # said so, by index and host
    assert all(a.key not in r.getMessage() for r in caplog_all.records)
