"""Issue 13, hole 2: a task publishing into a dataset it was not created for.

A victim org syncs a real chain with real Cryo and a real worker; then, on the same
database, a platform without a worker lets the test act as a hostile UDF: it holds an
attacker task's capability token and lease (an attacker org's planned cryo_ingest task,
or a plain task), and completes its own attempt with forged publications. Every forgery
is PERMISSION_DENIED with its reason code, writes nothing (no version row, no ledger
change, the attempt stays running), the victim's query still answers, and the task's own
correct completion still goes through afterwards. Single calls and the batch RPC alike.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import code_pb2

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, publication_at_home, user_client
from trace_platform.adapters.objectstore.factory import datasets_uri, scratch_uri
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.chain_sync import derive_dataset_uuid
from trace_platform.core.config import Settings
from trace_platform.core.errors import InvalidArgument, PermissionDenied
from trace_platform.core.manifest import derive_dataset_version
from trace_platform.core.models import TaskRef
from trace_platform.core.publication import output_prefix
from trace_platform.core.storage_paths import attempt_prefix
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2, dispatcher_pb2_grpc

VICTIM = ORG
ATTACKER = "00000000-0000-0000-0000-0000000000bb"
CHAIN_ID = 31337
BLOCKS = 20
BLOCKS_HASH = "cryo_ingest.blocks:v1"  # anyone can compute a stream's config hash
NOT_ALLOWED = "PUBLICATION_NOT_ALLOWED"
OUTSIDE = "PUBLICATION_OUTSIDE_PREFIX"


def sync_yaml(name: str, streams: tuple[tuple[str, int], ...]) -> str:
    body = "".join(
        f"  {key}:\n    cryo_dataset_name: {key}\n    rpc_pool: local\n    chunk_size: {chunk}\n    max_inflight: 2\n"
        for key, chunk in streams
    )
    return f"""
kind: chain_sync
name: {name}
chain_id: {CHAIN_ID}
mode:
  kind: fixed_target
  from_block: 0
  to_block: {BLOCKS}
streams:
{body}"""


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    try:
        anvil.mine(BLOCKS + 5)
        yield anvil
    finally:
        anvil.stop()


def _admin(ch: grpc.aio.Channel, settings: Settings) -> ChainSyncClient:
    assert settings.admin_token
    return ChainSyncClient(ch, admin_token=settings.admin_token)


async def victim_count(ch: grpc.aio.Channel, settings: Settings) -> list[list[Any]]:
    rows = await (await user_client(ch, settings, org_id=VICTIM)).query("victim.blocks", "SELECT count(*) FROM dataset")
    return rows.rows


@dataclass(frozen=True)
class Attack:
    """The platform the attacker talks to, with the victim's synced dataset beside it."""

    platform: RunningPlatform
    channel: grpc.aio.Channel
    victim_uuid: str
    victim_version: str  # one of the victim's real range versions


@pytest.fixture
async def attack(settings: Settings, node: AnvilNode, db: asyncpg.Connection) -> AsyncIterator[Attack]:
    fast = replace(
        settings,
        rpc_pools={"local": node.url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05),
    )
    syncing = await start_platform(fast, migrate=False, run_worker=True)
    try:
        async with grpc.aio.insecure_channel(syncing.addr) as ch:
            admin = _admin(ch, settings)
            await admin.apply(VICTIM, sync_yaml("victim", (("blocks", 10),)))

            async def synced() -> bool:
                jobs = await admin.status(VICTIM, "victim")
                return bool(jobs and jobs[0].completed)

            await eventually(synced, timeout=90, interval=0.2)
            assert await victim_count(ch, settings) == [[BLOCKS]]
    finally:
        await syncing.stop(grace=0.5)
    victim_uuid = derive_dataset_uuid(VICTIM, CHAIN_ID, "victim", "blocks")
    version = await db.fetchval("SELECT dataset_version::text FROM dataset_versions ORDER BY range_start LIMIT 1")
    # No worker from here on: the test is the attacker's worker (and its UDF).
    running = await start_platform(fast, migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            await _admin(ch, settings).apply(ATTACKER, sync_yaml("mine", (("blocks", 10), ("transactions", 20))))

            async def planned() -> bool:  # all of it (2 + 1 ranges): nothing moves under the test
                count = await db.fetchval(
                    "SELECT count(*) FROM chain_sync_ranges r JOIN chain_sync_jobs j ON j.id = r.job_id"
                    " WHERE j.org_id = $1",
                    uuid.UUID(ATTACKER),
                )
                return bool(count == 3)

            await eventually(planned)
            yield Attack(running, ch, victim_uuid, version)
    finally:
        await running.stop(grace=0.5)


@pytest.fixture(params=["single", "batching"])
def client(request: pytest.FixtureRequest, attack: Attack, settings: Settings) -> DispatcherClient:
    """The single RPCs and the batch RPCs (CompleteTasks) must refuse alike."""
    cls = BatchingDispatcherClient if request.param == "batching" else DispatcherClient
    return cls(attack.channel, worker_token=settings.worker_token, admin_token=settings.admin_token)


@dataclass(frozen=True)
class Claimed:
    ref: TaskRef
    token: str
    output: dict[str, Any]  # the output the planner declared for the task
    range_start: int
    range_end: int


async def claim_planned(client: DispatcherClient, db: asyncpg.Connection, key: str = "blocks", n: int = 0) -> Claimed:
    """The attacker org's own planned cryo_ingest task for stream ``key`` (n-th range), claimed."""

    async def planned() -> list[asyncpg.Record]:
        rows = await db.fetch(
            "SELECT r.task_id, t.config::text AS config FROM chain_sync_ranges r"
            " JOIN chain_sync_jobs j ON j.id = r.job_id JOIN tasks t ON t.id = r.task_id"
            " WHERE j.org_id = $1 AND r.dataset_key = $2 ORDER BY r.range_start",
            uuid.UUID(ATTACKER),
            key,
        )
        return rows if len(rows) > n else []

    row = (await eventually(planned))[n]
    config = json.loads(row["config"])
    resp = await client.claim(str(row["task_id"]), "attacker-worker")
    assert resp.WhichOneof("result") == "claimed"
    ref = TaskRef(str(row["task_id"]), resp.claimed.attempt, resp.claimed.lease_token)
    return Claimed(ref, resp.claimed.capability_token, config["outputs"][0], config["range_start"], config["range_end"])


def own_publication(settings: Settings, task: Claimed) -> common_pb2.DatasetPublication:
    """The one correct publication of ``task``: what its cryo_ingest worker sends."""
    return publication_at_home(
        settings,
        task.output["dataset_uuid"],
        task.output["dataset_version"],
        config_hash=task.output["config_hash"],
        range_start=task.range_start,
        range_end=task.range_end,
    )


async def written(db: asyncpg.Connection) -> tuple[Any, ...]:
    """Everything a publication could write."""
    versions = await db.fetch("SELECT * FROM dataset_versions ORDER BY dataset_uuid, dataset_version")
    ranges = await db.fetch("SELECT task_id, dataset_key, status, dataset_version FROM chain_sync_ranges ORDER BY 1, 2")
    finished = await db.fetch("SELECT id, status FROM tasks WHERE status <> 'queued' ORDER BY id")
    attempts = await db.fetch("SELECT task_id, attempt, outcome FROM task_attempts ORDER BY 1, 2")
    events = await db.fetchval("SELECT count(*) FROM task_events")
    return tuple(map(tuple, versions)), tuple(map(tuple, ranges)), tuple(map(tuple, finished)), attempts, events


async def refused(
    client: DispatcherClient,
    db: asyncpg.Connection,
    task: Claimed | tuple[TaskRef, str],
    pubs: list[common_pb2.DatasetPublication],
    reason: str,
    status: int = dispatcher_pb2.COMPLETION_STATUS_COMPLETED,
) -> None:
    ref, token = (task.ref, task.token) if isinstance(task, Claimed) else task
    before = await written(db)
    with pytest.raises(PermissionDenied) as exc:
        await client.complete(ref, token, status, datasets_published=pubs)
    assert exc.value.reason == reason
    assert await written(db) == before  # nothing written
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"


async def completes_correctly(
    client: DispatcherClient, db: asyncpg.Connection, settings: Settings, task: Claimed
) -> None:
    """After the refusals, the attempt's own correct completion still goes through."""
    done = await client.complete(task.ref, task.token, datasets_published=[own_publication(settings, task)])
    assert done.status == common_pb2.TASK_STATUS_COMPLETED and not done.duplicate
    ranges = await db.fetch("SELECT status FROM chain_sync_ranges WHERE task_id = $1", uuid.UUID(task.ref.task_id))
    assert [r["status"] for r in ranges] == ["completed"]


async def test_another_orgs_dataset_is_refused(
    attack: Attack, client: DispatcherClient, db: asyncpg.Connection, settings: Settings
) -> None:
    # (a) The victim's real version, at the victim's real location (uuid and prefix are derivable).
    forged = publication_at_home(settings, attack.victim_uuid, attack.victim_version, config_hash=BLOCKS_HASH)
    plain_ref = (await client.create_tasks([dispatcher_pb2.TaskSpec(org_id=ATTACKER, operator="noop")]))[0]
    resp = await client.claim(plain_ref, "attacker-worker")
    plain = (TaskRef(plain_ref, resp.claimed.attempt, resp.claimed.lease_token), resp.claimed.capability_token)
    await refused(client, db, plain, [forged], NOT_ALLOWED)  # a task that declares nothing
    mine = await claim_planned(client, db)
    await refused(client, db, mine, [forged], NOT_ALLOWED)
    # Its own publication plus the victim's: the whole completion is refused.
    await refused(client, db, mine, [own_publication(settings, mine), forged], NOT_ALLOWED)
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]
    await completes_correctly(client, db, settings, mine)


async def test_own_orgs_dataset_the_task_was_not_created_for_is_refused(
    attack: Attack, client: DispatcherClient, db: asyncpg.Connection, settings: Settings
) -> None:
    # (b) The attacker org's own transactions stream, published by its blocks task.
    mine = await claim_planned(client, db, "blocks")
    tx_uuid = derive_dataset_uuid(ATTACKER, CHAIN_ID, "mine", "transactions")
    tx_hash = "cryo_ingest.transactions:v1"
    tx_version = derive_dataset_version(tx_uuid, mine.range_start, mine.range_end, tx_hash)
    other = publication_at_home(
        settings, tx_uuid, tx_version, config_hash=tx_hash, range_start=mine.range_start, range_end=mine.range_end
    )
    await refused(client, db, mine, [other], NOT_ALLOWED)
    # Its own declared version, but another range or config: not what it was created for.
    for field, value in (("range_end", mine.range_end + 1), ("config_hash", "x"), ("range_start", 0)):
        wrong = own_publication(settings, mine)
        setattr(wrong, field, value)
        if wrong != own_publication(settings, mine):
            await refused(client, db, mine, [wrong], NOT_ALLOWED)
    # Only a success publishes.
    await refused(
        client, db, mine, [own_publication(settings, mine)], NOT_ALLOWED, dispatcher_pb2.COMPLETION_STATUS_FAILED
    )
    await completes_correctly(client, db, settings, mine)


async def test_storage_outside_the_write_prefix_is_refused(
    attack: Attack, client: DispatcherClient, db: asyncpg.Connection, settings: Settings
) -> None:
    # (c) The task's own declared output, with its storage pointing elsewhere.
    mine = await claim_planned(client, db)
    home = output_prefix(datasets_uri(settings), mine.output["dataset_uuid"], mine.output["dataset_version"])
    home_dir = home.removeprefix("file://")
    victim_dir = output_prefix(datasets_uri(settings), attack.victim_uuid, attack.victim_version).removeprefix(
        "file://"
    )
    scratch = attempt_prefix(scratch_uri(settings), mine.ref.task_id, mine.ref.attempt)
    variants = [
        common_pb2.StorageRef(scheme="file", prefix=victim_dir),  # the victim's objects
        common_pb2.StorageRef(scheme="file", prefix=f"{home_dir}../../{attack.victim_uuid}/{attack.victim_version}/"),
        common_pb2.StorageRef(scheme="file", prefix=f"{home_dir}sub/../"),
        common_pb2.StorageRef(scheme="s3", bucket="victim-bucket", prefix=home_dir.lstrip("/")),  # another scheme
        common_pb2.StorageRef(scheme="file", bucket="victim-bucket", prefix=home_dir),  # an ambiguous ref
        common_pb2.StorageRef(scheme="file", prefix=home_dir, glob="../../*.parquet"),  # traversal by glob
        common_pb2.StorageRef(scheme="file", prefix=home_dir, glob="*/*.parquet"),
        common_pb2.StorageRef(scheme="file", prefix=scratch.removeprefix("file://")),  # its scratch: not the version's
        common_pb2.StorageRef(scheme="file", prefix=f"{home_dir}sub/"),
        common_pb2.StorageRef(scheme="file", prefix="/"),
    ]
    for storage in variants:
        pub = own_publication(settings, mine)
        pub.storage_ref.CopyFrom(storage)
        await refused(client, db, mine, [pub], OUTSIDE)
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]
    # The token's write prefixes now include the version's prefix; a buffered batch (Sink
    # input) still has to be an artifact under the attempt's scratch prefix.
    for uri in (f"{home}rows.jsonl", f"{scratch}sub//rows.jsonl", f"{scratch}./rows.jsonl"):
        with pytest.raises((PermissionDenied, InvalidArgument)):
            await client.buffer_publish(mine.ref, mine.token, uri, 10)
    assert await db.fetchval("SELECT count(*) FROM buffered_publishes") == 0
    await completes_correctly(client, db, settings, mine)


async def test_a_forged_partition_version_is_refused(
    attack: Attack, client: DispatcherClient, db: asyncpg.Connection, settings: Settings
) -> None:
    # (d) A new range version of the victim's partitioned dataset under its (computable) config
    # hash: before the fix it joined the victim's dataset and broke its every query.
    mine = await claim_planned(client, db)
    version = derive_dataset_version(attack.victim_uuid, 1000, 1010, BLOCKS_HASH)
    forged = publication_at_home(
        settings, attack.victim_uuid, version, config_hash=BLOCKS_HASH, range_start=1000, range_end=1010
    )
    await refused(client, db, mine, [forged], NOT_ALLOWED)
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]
    await completes_correctly(client, db, settings, mine)
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]


async def test_the_registry_not_the_config_hash_decides_a_partitioned_datasets_versions(
    attack: Attack, db: asyncpg.Connection, settings: Settings
) -> None:
    """The second wall on its own: a version row that reached the table anyway (say through a
    path that skipped the Dispatcher's check) with the victim's uuid and config hash is not
    part of the victim's dataset, because the chain_sync ledger never planned it."""
    attacker_task = await db.fetchval(
        "SELECT r.task_id FROM chain_sync_ranges r JOIN chain_sync_jobs j ON j.id = r.job_id WHERE j.org_id = $1"
        " LIMIT 1",
        uuid.UUID(ATTACKER),
    )
    for producer in (attacker_task, None):
        await db.execute(
            "INSERT INTO dataset_versions (dataset_uuid, dataset_version, storage_ref, config_hash, range_start,"
            " range_end, producer_task_id) VALUES ($1, $2, $3::jsonb, $4, 1000, 1010, $5)",
            uuid.UUID(attack.victim_uuid),
            uuid.uuid4(),
            json.dumps({"scheme": "file", "bucket": "", "prefix": "/nonexistent/", "glob": "*.parquet"}),
            BLOCKS_HASH,
            producer,
        )
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]


async def test_the_ledger_marks_a_range_only_with_its_declared_version(attack: Attack, db: asyncpg.Connection) -> None:
    """The completion rule on its own (as if the Dispatcher's check were skipped): a
    cryo_ingest task that registered another version of its own stream cannot complete,
    so the ledger (which decides what the dataset reads) never takes that version."""
    task_id = await db.fetchval(
        "SELECT r.task_id FROM chain_sync_ranges r JOIN chain_sync_jobs j ON j.id = r.job_id"
        " WHERE j.org_id = $1 AND r.dataset_key = 'blocks' LIMIT 1",
        uuid.UUID(ATTACKER),
    )
    await db.execute(
        "INSERT INTO dataset_versions (dataset_uuid, dataset_version, storage_ref, producer_task_id)"
        " VALUES ($1, $2, '{}'::jsonb, $3)",
        uuid.UUID(derive_dataset_uuid(ATTACKER, CHAIN_ID, "mine", "blocks")),
        uuid.uuid4(),
        task_id,
    )
    with pytest.raises(asyncpg.PostgresError) as exc:
        await db.execute("UPDATE tasks SET status = 'completed' WHERE id = $1", task_id)
    assert exc.value.sqlstate == "TRPUB"
    ranges = await db.fetch("SELECT status FROM chain_sync_ranges WHERE task_id = $1", task_id)
    assert [r["status"] for r in ranges] == ["scheduled"]


async def test_the_batch_rpc_refuses_only_the_forged_item(
    attack: Attack, db: asyncpg.Connection, settings: Settings
) -> None:
    """One CompleteTasks call: a forged completion and a correct one. The forged item is
    PERMISSION_DENIED with its reason and writes nothing; the correct one completes."""
    client = DispatcherClient(attack.channel, worker_token=settings.worker_token, admin_token=settings.admin_token)
    bad, good = await claim_planned(client, db, n=0), await claim_planned(client, db, n=1)
    forged = own_publication(settings, bad)
    forged.dataset_uuid = attack.victim_uuid
    outside = own_publication(settings, bad)
    outside.storage_ref.prefix = "/"

    def item(task: Claimed, pub: common_pb2.DatasetPublication) -> dispatcher_pb2.CompleteItem:
        request = dispatcher_pb2.CompleteTaskRequest(
            task=common_pb2.TaskRef(
                task_id=task.ref.task_id, attempt=task.ref.attempt, lease_token=task.ref.lease_token
            ),
            status=dispatcher_pb2.COMPLETION_STATUS_COMPLETED,
            datasets_published=[pub],
        )
        return dispatcher_pb2.CompleteItem(request=request, capability_token=task.token)

    stub = dispatcher_pb2_grpc.DispatcherServiceStub(attack.channel)
    resp = await stub.CompleteTasks(
        dispatcher_pb2.CompleteTasksRequest(
            items=[item(bad, forged), item(good, own_publication(settings, good)), item(bad, outside)]
        )
    )
    first, second, third = resp.results
    assert (first.error.code, first.error.reason) == (code_pb2.PERMISSION_DENIED, NOT_ALLOWED)
    assert second.ok.status == common_pb2.TASK_STATUS_COMPLETED
    assert (third.error.code, third.error.reason) == (code_pb2.PERMISSION_DENIED, OUTSIDE)
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(bad.ref.task_id)) == "running"
    producers = await db.fetch(
        "SELECT producer_task_id::text AS t FROM dataset_versions WHERE dataset_uuid = $1",
        uuid.UUID(good.output["dataset_uuid"]),
    )
    assert [r["t"] for r in producers] == [good.ref.task_id]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM dataset_versions WHERE dataset_uuid = $1", uuid.UUID(attack.victim_uuid)
        )
        == BLOCKS // 10
    )
    assert await victim_count(attack.channel, settings) == [[BLOCKS]]
