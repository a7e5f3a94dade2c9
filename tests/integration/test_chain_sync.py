"""chain_sync end to end against a real anvil node: apply, plan, Cryo, publish, query;
idempotent apply, pause and resume, follow_head, and the cryo_ingest completion rule."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, publication_at_home, user_client
from tests.rpc_proxy import RpcLimitProxy
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient, pb
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2

BLOCKS = 60


def sync_yaml(name: str, to_block: int = BLOCKS, chunk: int = 20, inflight: int = 2, stagger: int = 5) -> str:
    """Three streams; chunk sizes chunk, chunk + stagger, chunk + 2 * stagger (0: all equal,
    so the planner groups them into one Cryo call per range)."""
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
    rpc_pool: local
    chunk_size: {chunk}
    max_inflight: {inflight}
  transactions:
    cryo_dataset_name: transactions
    rpc_pool: local
    chunk_size: {chunk + stagger}
    max_inflight: {inflight}
  logs:
    cryo_dataset_name: logs
    rpc_pool: local
    chunk_size: {chunk + 2 * stagger}
    max_inflight: {inflight}
"""


class Chain:
    def __init__(self, node: AnvilNode) -> None:
        self.node = node
        emitter = node.deploy_log_emitter()
        self.tx_hashes = [node.send(to=emitter, gas=hex(100_000))["transactionHash"] for _ in range(3)]
        self.tx_hashes.append(node.send(to=node.accounts[1], value=hex(10**18))["transactionHash"])
        node.mine(BLOCKS + 10 - node.block_number())
        self.logs = node.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(BLOCKS - 1)})
        blocks = [node.rpc("eth_getBlockByNumber", hex(n), False) for n in range(BLOCKS)]
        self.hashes = [b["hash"] for b in blocks]
        self.all_tx_hashes = [tx for b in blocks for tx in b["transactions"]]


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    node = AnvilNode.start()
    try:
        yield Chain(node)
    finally:
        node.stop()


@pytest.fixture
async def syncing(settings: Settings, chain: Chain) -> AsyncIterator[RunningPlatform]:
    fast = replace(
        settings,
        rpc_pools={"local": chain.node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
    )
    running = await start_platform(fast, migrate=False, run_worker=True)
    yield running
    await running.stop(grace=0.5)


@pytest.fixture
async def platform(settings: Settings, chain: Chain) -> AsyncIterator[RunningPlatform]:
    """No worker runs; the `local` pool is the module's anvil, so apply accepts it and the
    head observer sees a chain (fixed_target plans only up to the observed head)."""
    planning = replace(
        settings,
        rpc_pools={"local": chain.node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
    )
    running = await start_platform(planning, migrate=False)
    yield running
    await running.stop(grace=0.5)


def _admin(ch: grpc.aio.Channel, settings: Settings) -> ChainSyncClient:
    assert settings.admin_token
    return ChainSyncClient(ch, admin_token=settings.admin_token)


async def _wait_complete(admin: ChainSyncClient, name: str, timeout: float = 90) -> pb.ChainSyncStatus:
    async def done() -> pb.ChainSyncStatus | None:
        jobs = await admin.status(ORG, name)
        return jobs[0] if jobs and jobs[0].completed else None

    status: pb.ChainSyncStatus = await eventually(done, timeout=timeout, interval=0.2)
    return status


async def test_fixed_target_sync_is_queryable_and_matches_the_node(
    syncing: RunningPlatform, settings: Settings, chain: Chain, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(syncing.addr) as ch:
        admin = _admin(ch, settings)
        first = await admin.apply(ORG, sync_yaml("local"))
        assert first.outcome == pb.APPLY_OUTCOME_CREATED
        again = await admin.apply(ORG, sync_yaml("local") + "\n# a comment changes nothing\n")
        assert (again.outcome, again.job_id, again.yaml_hash) == (
            pb.APPLY_OUTCOME_UNCHANGED,
            first.job_id,
            first.yaml_hash,
        )
        status = await _wait_complete(admin, "local")
        for stream in status.streams:
            assert (stream.cursor, stream.in_flight, stream.completed_blocks) == (BLOCKS, 0, BLOCKS), stream
            assert stream.dataset_name == f"local.{stream.dataset_key}"

        user = await user_client(ch, settings)
        blocks = await user.query(
            "local.blocks", "SELECT block_number, block_hash FROM dataset ORDER BY block_number", limit=10_000
        )
        assert [r[0] for r in blocks.rows] == list(range(BLOCKS))  # every block exactly once
        assert ["0x" + bytes(r[1]).hex() for r in blocks.rows] == chain.hashes
        logs = await user.query("local.logs", "SELECT count(*) FROM dataset")
        assert logs.rows == [[len(chain.logs)]] and len(chain.logs) == 3
        txs = await user.query("local.transactions", "SELECT transaction_hash FROM dataset")
        assert sorted("0x" + bytes(r[0]).hex() for r in txs.rows) == sorted(chain.all_tx_hashes)
        assert set(chain.tx_hashes) < set(chain.all_tx_hashes)
        # Two synced datasets joined, each under its own relation name (several ranges each).
        joined = await user.query(
            {"txs": "local.transactions", "logs": "local.logs"},
            "SELECT t.transaction_hash, t.block_number, l.log_index, l.address, t.to_address"
            " FROM txs t JOIN logs l ON t.transaction_hash = l.transaction_hash ORDER BY 2, 3",
        )
        expected = sorted((lg["transactionHash"], int(lg["blockNumber"], 16)) for lg in chain.logs)
        assert sorted(("0x" + bytes(r[0]).hex(), r[1]) for r in joined.rows) == expected and len(expected) == 3
        assert all(bytes(r[3]) == bytes(r[4]) for r in joined.rows)  # each log's emitter is its tx's callee
        assert set(joined.versions) == {"txs", "logs"}
        assert joined.versions["txs"] == (await user.query("local.transactions", "SELECT 1")).dataset_version

    # Ledger: ranges are contiguous, unique, end-exclusive; one version per range.
    ranges = await db.fetch(
        "SELECT dataset_key, range_start, range_end, status FROM chain_sync_ranges ORDER BY dataset_key, range_start"
    )
    by_key: dict[str, list[tuple[int, int]]] = {}
    for r in ranges:
        assert r["status"] == "completed"
        by_key.setdefault(r["dataset_key"], []).append((r["range_start"], r["range_end"]))
    for spans in by_key.values():
        assert spans[0][0] == 0 and spans[-1][1] == BLOCKS
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == len(ranges)
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE status <> 'completed'") == 0


async def test_pause_stops_planning_and_resume_finishes(
    syncing: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(syncing.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, sync_yaml("paused", chunk=5, inflight=1))
        await admin.pause(ORG, "paused")
        await asyncio.sleep(1.0)
        frozen = await db.fetchval("SELECT count(*) FROM chain_sync_ranges")
        await asyncio.sleep(1.0)
        assert await db.fetchval("SELECT count(*) FROM chain_sync_ranges") == frozen
        jobs = await admin.status(ORG, "paused")
        assert jobs[0].paused and not jobs[0].completed
        assert all(s.cursor < BLOCKS for s in jobs[0].streams)
        await admin.resume(ORG, "paused")
        status = await _wait_complete(admin, "paused")
        assert not status.paused and all(s.cursor == BLOCKS for s in status.streams)


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        (sync_yaml("bad").replace("to_block: 60", "to_block: 0"), "mode.to_block"),
        (sync_yaml("bad").replace("chunk_size: 20", "chunk_size: 0"), "streams.blocks.chunk_size"),
        (
            sync_yaml("bad").replace(
                "rpc_pool: local\n    chunk_size: 20", "rpc_pool: local\n    colour: red\n    chunk_size: 20"
            ),
            "streams.blocks.colour",
        ),
        (
            sync_yaml("bad").replace(
                "rpc_pool: local\n    chunk_size: 20", "rpc_pool: http://node.example\n    chunk_size: 20"
            ),
            "streams.blocks.rpc_pool",
        ),
        (sync_yaml("Bad Name"), "name"),
    ],
)
async def test_bad_yaml_is_refused_with_the_offending_path(
    platform: RunningPlatform, settings: Settings, db: asyncpg.Connection, yaml_text: str, field: str
) -> None:
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        with pytest.raises(InvalidArgument) as exc:
            await _admin(ch, settings).apply(ORG, yaml_text)
    assert exc.value.metadata.get("field") == field or field in exc.value.message
    assert await db.fetchval("SELECT count(*) FROM chain_sync_jobs") == 0


async def test_incompatible_reapply_is_refused(platform: RunningPlatform, settings: Settings) -> None:
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, sync_yaml("fixed"))
        with pytest.raises(FailedPrecondition) as exc:
            await admin.apply(ORG, sync_yaml("fixed").replace("cryo_dataset_name: logs", "cryo_dataset_name: traces"))
        assert exc.value.reason == "CHAIN_SYNC_IMMUTABLE_FIELD"
        raised = await admin.apply(ORG, sync_yaml("fixed", to_block=BLOCKS + 20))
        assert raised.outcome == pb.APPLY_OUTCOME_UPDATED


async def test_cryo_ingest_must_publish_exactly_one_version(client: DispatcherClient, db: asyncpg.Connection) -> None:
    """A cryo_ingest task created outside the planner declares no outputs: it cannot complete
    without a publication, and may publish nothing (docs/chain_sync.md, publication rule)."""
    pubs = [
        common_pb2.DatasetPublication(
            dataset_uuid=str(uuid.uuid4()),
            dataset_version=str(uuid.uuid4()),
            storage_ref=common_pb2.StorageRef(scheme="file", prefix=f"/data/{i}/"),
        )
        for i in range(2)
    ]
    for published, refused in (([], FailedPrecondition), (pubs, PermissionDenied)):
        task_id = (await client.create_tasks([dispatcher_pb2.TaskSpec(org_id=ORG, operator="cryo_ingest")]))[0]
        claimed = (await client.claim(task_id, "w")).claimed
        ref = TaskRef(task_id, claimed.attempt, claimed.lease_token)
        with pytest.raises(refused) as exc:
            await client.complete(ref, claimed.capability_token, datasets_published=published)
        assert exc.value.reason == ("PUBLICATION_REQUIRED" if not published else "PUBLICATION_NOT_ALLOWED")
        assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(task_id)) == "running"
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 0


TAIL_LAG = 2


def follow_yaml(name: str) -> str:
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode:
  kind: follow_head
  from_block: 0
  tail_lag: {TAIL_LAG}
  head_poll_interval_seconds: 1
  max_head_age_seconds: 3
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: local
    chunk_size: 4
    max_inflight: 2
"""


async def test_follow_head_keeps_up_and_stops_planning_on_a_stale_head(
    settings: Settings, db: asyncpg.Connection
) -> None:
    node = AnvilNode.start("--block-time", "1")
    try:
        node.mine(20)
        fast = replace(
            settings,
            rpc_pools={"local": node.url},
            dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
        )
        running = await start_platform(fast, migrate=False, run_worker=True)
        try:
            async with grpc.aio.insecure_channel(running.addr) as ch:
                admin = _admin(ch, settings)
                await admin.apply(ORG, follow_yaml("follow"))

                async def caught_up_to(target: int) -> bool:
                    stream = (await admin.status(ORG, "follow"))[0].streams[0]
                    return stream.completed_blocks >= target

                await eventually(lambda: caught_up_to(16), timeout=30, interval=0.2)
                head_then = node.block_number()
                # Keeps up: everything up to head + 1 - tail_lag of a later head gets synced.
                await eventually(lambda: caught_up_to(head_then + 1 - TAIL_LAG), timeout=30, interval=0.2)
                stream = (await admin.status(ORG, "follow"))[0].streams[0]
                assert stream.HasField("head_block") and stream.head_block >= head_then
                # The planner never plans past head + 1 - tail_lag.
                assert stream.cursor <= stream.head_block + 1 - TAIL_LAG

                node.stop()  # no more head observations: the last one goes stale
                await asyncio.sleep(3.5)
                frozen = await db.fetchval("SELECT max(range_end) FROM chain_sync_ranges")
                await asyncio.sleep(1.5)
                assert await db.fetchval("SELECT max(range_end) FROM chain_sync_ranges") == frozen
        finally:
            await running.stop(grace=0.5)
    finally:
        node.stop()


async def test_a_job_polling_faster_than_the_observer_interval_sets_its_pace(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """head_poll_interval_seconds may be fractional; the observer (its interval 1 s here,
    the default) then wakes as often as the fastest job asks, and asks the chain id only
    once (not with every head), so a fast poll costs one request per observation."""
    node = AnvilNode.start()
    proxy = RpcLimitProxy.start(node.url)
    try:
        paced = replace(
            settings,
            rpc_pools={"local": proxy.url},
            dispatcher=replace(settings.dispatcher, head_observer_interval_seconds=1.0),
        )
        running = await start_platform(paced, migrate=False)
        try:
            async with grpc.aio.insecure_channel(running.addr) as ch:
                doc = follow_yaml("fast_poll").replace("interval_seconds: 1", "interval_seconds: 0.25")
                await _admin(ch, settings).apply(ORG, doc)
                spec = await db.fetchval("SELECT spec->'mode'->>'head_poll_interval_seconds' FROM chain_sync_jobs")
                assert spec == "0.25"
                await eventually(lambda: db.fetchval("SELECT count(*) FROM chain_head_observations"), timeout=10)
                seen = set()
                for _ in range(40):  # 2 s
                    seen.add(await db.fetchval("SELECT observed_at FROM chain_head_observations"))
                    await asyncio.sleep(0.05)
                # Every 0.25 s is ~8 observations in 2 s; at the loop's own 1 s pace it would be 2 or 3.
                assert len(seen) >= 5, len(seen)
                methods = proxy.counts.methods
                assert methods["eth_blockNumber"] >= 5 and methods["eth_chainId"] <= 2, methods
        finally:
            await running.stop(grace=0.5)
    finally:
        proxy.stop()
        node.stop()


async def test_streams_with_equal_settings_share_one_cryo_call_per_range(
    syncing: RunningPlatform, settings: Settings, chain: Chain, db: asyncpg.Connection
) -> None:
    grouped = sync_yaml("grouped", chunk=20, stagger=0)
    async with grpc.aio.insecure_channel(syncing.addr) as ch:
        await _admin(ch, settings).apply(ORG, grouped)
        await _wait_complete(_admin(ch, settings), "grouped")
        user = await user_client(ch, settings)
        blocks = await user.query("grouped.blocks", "SELECT count(DISTINCT block_number), count(*) FROM dataset")
        assert blocks.rows == [[BLOCKS, BLOCKS]]
        logs = await user.query("grouped.logs", "SELECT count(*) FROM dataset")
        assert logs.rows == [[len(chain.logs)]]
    # One task per range extracted all three streams; each stream got its own version.
    per_task = await db.fetch(
        "SELECT task_id, count(*) AS streams, min(range_start) AS s FROM chain_sync_ranges GROUP BY task_id"
    )
    assert len(per_task) == BLOCKS // 20 and {r["streams"] for r in per_task} == {3}
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 3 * BLOCKS // 20
    assert await db.fetchval("SELECT count(*) FROM tasks") == BLOCKS // 20


async def test_a_grouped_task_must_publish_every_stream(
    platform: RunningPlatform, settings: Settings, client: DispatcherClient, db: asyncpg.Connection
) -> None:
    """No worker runs here: the test completes a planned grouped task itself, publishing
    only one of its three streams, and the whole completion is refused."""
    grouped = sync_yaml("partial", chunk=20, stagger=0)
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        await _admin(ch, settings).apply(ORG, grouped)

    async def planned() -> asyncpg.Record | None:
        return await db.fetchrow("SELECT id, config::text AS config FROM tasks LIMIT 1")

    task = await eventually(planned)
    config = json.loads(task["config"])
    claimed = (await client.claim(str(task["id"]), "w")).claimed
    ref = TaskRef(str(task["id"]), claimed.attempt, claimed.lease_token)
    first = config["outputs"][0]
    only_one = publication_at_home(
        settings,
        first["dataset_uuid"],
        first["dataset_version"],
        config_hash=first["config_hash"],
        range_start=config["range_start"],
        range_end=config["range_end"],
    )
    with pytest.raises(FailedPrecondition) as exc:
        await client.complete(ref, claimed.capability_token, datasets_published=[only_one])
    assert exc.value.reason == "PUBLICATION_REQUIRED"
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 0  # rolled back whole
    statuses = await db.fetch("SELECT status FROM chain_sync_ranges WHERE task_id = $1", task["id"])
    assert [r["status"] for r in statuses] == ["scheduled"] * 3


async def test_resume_retries_ranges_whose_task_failed_for_good(
    platform: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    """No worker here: the planner schedules, the test fails one task terminally."""
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        admin = _admin(ch, settings)
        await admin.apply(ORG, sync_yaml("stalled"))

        async def planned() -> asyncpg.Record | None:
            return await db.fetchrow("SELECT id, max_attempts FROM tasks ORDER BY created_at LIMIT 1")

        task = await eventually(planned)
        await db.execute(
            "UPDATE tasks SET status = 'failed', attempt = max_attempts, next_retry_at = NULL,"
            " error_message = 'rpc/CRYO_FAILED: down' WHERE id = $1",
            task["id"],
        )
        keys = {
            r["dataset_key"]
            for r in await db.fetch("SELECT dataset_key FROM chain_sync_ranges WHERE task_id = $1", task["id"])
        }
        stalled = (await admin.status(ORG, "stalled"))[0]
        shown = {s.dataset_key: (s.last_error, s.last_error_category) for s in stalled.streams}
        assert all(shown[k] == ("rpc/CRYO_FAILED", "rpc") for k in keys) and keys
        await admin.pause(ORG, "stalled")
        await admin.resume(ORG, "stalled")
    row = await db.fetchrow("SELECT status, attempt, max_attempts FROM tasks WHERE id = $1", task["id"])
    assert (row["status"], row["attempt"], row["max_attempts"]) == (
        "queued",
        task["max_attempts"] + 1,
        task["max_attempts"] + 1,
    )
    assert (
        await db.fetchval("SELECT count(*) FROM outbox WHERE payload->>'task_id' = $1", str(task["id"])) == 2
    )  # the first wake-up and the retry's
    assert (
        await db.fetchval("SELECT DISTINCT status FROM chain_sync_ranges WHERE task_id = $1", task["id"]) == "scheduled"
    )
