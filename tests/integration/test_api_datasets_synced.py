"""GetDataset of a chain_sync stream that really synced (anvil, Cryo, a worker): the
range and current version come from the ledger's completed ranges, the columns from
the Parquet Cryo wrote; a published name reads the same dataset."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.api_support import make_user
from tests.conftest import eventually
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.datasets import ChainSyncStreamSource, DatasetInfo, DatasetsClient
from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.config import Settings

BLOCKS = 30
YAML = f"""
kind: chain_sync
name: synced
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: {BLOCKS}
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: local
    chunk_size: 10
    max_inflight: 3
"""


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    try:
        anvil.mine(BLOCKS + 5)
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
async def syncing(settings: Settings, node: AnvilNode) -> AsyncIterator[RunningPlatform]:
    fast = replace(
        settings,
        rpc_pools={"local": node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
    )
    running = await start_platform(fast, migrate=False, run_worker=True)
    yield running
    await running.stop(grace=0.5)


@pytest.mark.timeout(180)
async def test_a_synced_stream_shows_its_range_version_and_columns(
    syncing: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    user = await make_user(syncing.pool, settings, "editor")
    await ChainSyncRepository(syncing.pool).apply(user.org_id, parse_chain_sync(YAML))
    async with grpc.aio.insecure_channel(syncing.addr) as ch:
        client = DatasetsClient(ch, token=user.token)

        async def synced() -> DatasetInfo | None:
            d = await client.get("synced.blocks")
            return d if d.range_end == BLOCKS and d.version_count == 3 else None

        got = await eventually(synced, timeout=120, interval=0.3)
        latest = await db.fetchval(
            "SELECT dataset_version::text FROM chain_sync_ranges WHERE range_end = $1 AND status = 'completed'",
            BLOCKS,
        )
        assert (got.kind, got.range_start, got.current_version) == ("partitioned", 0, latest)
        columns = {c.name: c.type for c in got.columns}
        assert columns["block_number"] == "uint32"  # as Cryo writes it
        assert columns["block_hash"] == "large_binary"
        published = await client.publish("eth_blocks", ChainSyncStreamSource("synced", "blocks"))
        assert published.dataset.dataset_id == got.dataset_id
        assert published.dataset.columns == got.columns
