"""Wake-ups on the block-to-alert path: a head that moves wakes the planner, and new alert
events wake the delivery loop. Both loops poll at 30 s here, so only the wake-up can make
the work happen within seconds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, claim_new, fast_alert_settings
from tests.integration.test_sink_delivery import jsonl, publish, rows_for
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings

pytestmark = pytest.mark.integration
SLOW_POLL = 30.0


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
async def running(settings: Settings, node: AnvilNode) -> AsyncIterator[RunningPlatform]:
    fast = fast_alert_settings(replace(settings, rpc_pools={"local": node.url}))
    fast = replace(
        fast,
        dispatcher=replace(fast.dispatcher, planner_interval_seconds=SLOW_POLL, head_observer_interval_seconds=0.1),
        delivery=replace(fast.delivery, interval_seconds=SLOW_POLL),
    )
    platform = await start_platform(fast, migrate=False)
    yield platform
    await platform.stop(grace=0.5)


async def test_a_new_head_is_planned_at_once(
    running: RunningPlatform, settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    start = node.block_number() + 1
    job = f"""
kind: chain_sync
name: tip
chain_id: 31337
mode: {{kind: follow_head, from_block: {start}, tail_lag: 0, head_poll_interval_seconds: 1, max_head_age_seconds: 30}}
streams:
  transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 1, max_inflight: 4}}
"""
    assert settings.admin_token
    async with grpc.aio.insecure_channel(running.addr) as ch:
        await ChainSyncClient(ch, admin_token=settings.admin_token).apply(ORG, job)
    await eventually(lambda: db.fetchval("SELECT count(*) FROM chain_head_observations"), timeout=10)
    for _ in range(2):  # each new block's range is planned within the head poll, not the planner's
        block = int(node.send(to=node.accounts[1], value="0x1")["blockNumber"], 16)
        mined = time.monotonic()

        async def planned(block: int = block) -> bool:
            n = await db.fetchval("SELECT count(*) FROM chain_sync_ranges WHERE range_start = $1", block)
            return bool(n)

        await eventually(planned, timeout=10, interval=0.02)
        assert time.monotonic() - mined < 3.0


async def test_new_alert_events_are_delivered_at_once(running: RunningPlatform, db: asyncpg.Connection) -> None:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        s = running.settings
        client = DispatcherClient(ch, worker_token=s.worker_token, admin_token=s.admin_token)
        with webhook_receiver() as receiver:
            definition = await AlertRepository(running.pool).create_definition(ORG, "now", [receiver.url("/now")])
            # The delivery loop's first pass is behind us: the next one is SLOW_POLL away.
            await eventually(lambda: db.fetchval("SELECT count(*) FROM alert_definitions"), timeout=5)
            for round_ in range(2):
                ref, cap = await claim_new(client)
                sent = time.monotonic()
                await publish(client, ref, cap, jsonl(rows_for(definition, 1, prefix=f"r{round_}")))

                async def delivered(want: int = round_ + 1) -> bool:
                    return len(receiver.delivered()) == want

                await eventually(delivered, timeout=10, interval=0.02)
                assert time.monotonic() - sent < 3.0
