"""DatasetService on a served platform against real PostgreSQL: list (keyset pages),
get with the Parquet columns of the current version, publish a chain_sync stream under
a name; the auth matrix and org scoping of each RPC."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.api_matrix import assert_bad_credentials_refused, assert_role_refused, refused
from tests.api_support import ApiUser, make_user
from tests.datasets import FIXTURE_ROWS, write_dataset
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform
from trace_platform.clients.api.datasets import ChainSyncStreamSource, DagOutputSource, DatasetsClient
from trace_platform.core.chain_sync import parse_chain_sync
from trace_platform.core.config import Settings
from trace_platform.core.dag_config import udf_dataset_name, udf_dataset_uuid
from trace_platform.core.errors import AlreadyExists, InvalidArgument, NotFound
from trace_platform.gen.trace.api.v1 import datasets_pb2 as pb
from trace_platform.gen.trace.api.v1 import datasets_pb2_grpc


def sync_yaml(name: str) -> str:
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: 10
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: local
    chunk_size: 10
    max_inflight: 1
  logs:
    cryo_dataset_name: logs
    rpc_pool: local
    chunk_size: 10
    max_inflight: 1
"""


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> datasets_pb2_grpc.DatasetServiceStub:
    return datasets_pb2_grpc.DatasetServiceStub(channel)


@pytest.fixture
async def editor(platform: RunningPlatform, settings: Settings) -> ApiUser:
    return await make_user(platform.pool, settings, "editor")


@pytest.fixture
async def client(channel: grpc.aio.Channel, editor: ApiUser) -> AsyncIterator[DatasetsClient]:
    yield DatasetsClient(channel, token=editor.token)


async def _aliases(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM dataset_aliases"))


async def test_get_shows_columns_version_and_pii_and_publish_names_a_stream(
    platform: RunningPlatform,
    client: DatasetsClient,
    editor: ApiUser,
    local_store: LocalObjectStore,
    objects_uri: str,
    db: asyncpg.Connection,
) -> None:
    ds = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(platform.pool).publish(editor.org_id, "fixture", ds.publication, ["email"])
    await ChainSyncRepository(platform.pool).apply(editor.org_id, parse_chain_sync(sync_yaml("mainnet")))

    got = await client.get("fixture")
    assert (got.dataset_id, got.current_version, got.kind) == (ds.dataset_uuid, ds.dataset_version, "versioned")
    assert got.published and got.version_count == 1 and got.pii_columns == ("email",)
    assert [(c.name, c.type, c.pii) for c in got.columns] == [
        ("dedupe_key", "string", False),
        ("block_number", "int64", False),
        ("email", "string", True),
    ]

    stream = await client.get("mainnet.blocks")
    assert stream.kind == "partitioned" and stream.current_version is None and stream.columns == ()
    assert stream.chain_sync_stream == ChainSyncStreamSource("mainnet", "blocks")

    first = await client.publish("eth_blocks", ChainSyncStreamSource("mainnet", "blocks"))
    assert first.created and first.dataset.dataset_id == stream.dataset_id
    assert first.dataset.name == "mainnet.blocks" and first.dataset.published_names == ("eth_blocks",)
    assert (await client.get("eth_blocks")).dataset_id == stream.dataset_id
    again = await client.publish("eth_blocks", ChainSyncStreamSource("mainnet", "blocks"))
    assert not again.created and await _aliases(db) == 1
    # The query path resolves the published name to the same dataset.
    resolved = await DatasetRepository(platform.pool).resolve_published(editor.org_id, "eth_blocks")
    assert resolved is not None and resolved.dataset_uuid == stream.dataset_id

    # A name another dataset holds (an alias or a registry name), an unknown source, a bad name.
    for name in ("eth_blocks", "fixture"):
        with pytest.raises(AlreadyExists) as taken:
            await client.publish(name, ChainSyncStreamSource("mainnet", "logs"))
        assert taken.value.reason == "DATASET_NAME_TAKEN"
    for source in (
        ChainSyncStreamSource("mainnet", "traces"),
        ChainSyncStreamSource("nosuch", "blocks"),
        DagOutputSource("dag", "job", 0),
    ):
        with pytest.raises(NotFound) as unknown:
            await client.publish("other", source)
        assert unknown.value.reason == "SOURCE_NOT_FOUND"
    for bad in ("Eth", "1eth", "eth-blocks", "a" * 129, "eth.blocks", ""):
        with pytest.raises(InvalidArgument) as invalid:
            await client.publish(bad, ChainSyncStreamSource("mainnet", "logs"))
        assert invalid.value.reason == "INVALID_DATASET_NAME"
    assert await _aliases(db) == 1
    with pytest.raises(NotFound) as missing:
        await client.get("nosuch")
    assert missing.value.reason == "DATASET_NOT_FOUND"
    names = {d.name: d.published_names async for d in client.iterate()}
    assert names == {"fixture": (), "mainnet.blocks": ("eth_blocks",), "mainnet.logs": ()}


async def test_list_pages_are_stable_complete_and_org_scoped(
    platform: RunningPlatform, client: DatasetsClient, editor: ApiUser, settings: Settings, channel: grpc.aio.Channel
) -> None:
    repo = ChainSyncRepository(platform.pool)
    for name in ("one", "two", "three", "four"):
        await repo.apply(editor.org_id, parse_chain_sync(sync_yaml(name)))  # 2 datasets each
    other = await make_user(platform.pool, settings, "admin")
    await repo.apply(other.org_id, parse_chain_sync(sync_yaml("theirs")))

    pages, token = [], ""
    while True:
        page = await client.list(page_size=3, page_token=token)
        pages.append([d.name for d in page.items])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    flat = [n for p in pages for n in p]
    assert len(set(flat)) == 8 and not any(n.startswith("theirs.") for n in flat)
    # Stable: the same pages again, and rows added meanwhile only ever come at the end.
    await repo.apply(editor.org_id, parse_chain_sync(sync_yaml("five")))
    assert [d.name for d in (await client.list(page_size=8)).items] == flat
    assert [d.name async for d in client.iterate(page_size=3)][:8] == flat
    theirs = DatasetsClient(channel, token=other.token)
    assert {d.name for d in (await theirs.list()).items} == {"theirs.blocks", "theirs.logs"}
    for token in ("garbage!", "eyJ0IjoxfQ", "e30"):
        with pytest.raises(InvalidArgument) as bad:
            await client.list(page_token=token)
        assert bad.value.reason == "PAGE_TOKEN_INVALID"


async def test_auth_matrix_and_another_org_is_not_found(
    platform: RunningPlatform,
    stub: datasets_pb2_grpc.DatasetServiceStub,
    editor: ApiUser,
    settings: Settings,
    db: asyncpg.Connection,
) -> None:
    await ChainSyncRepository(platform.pool).apply(editor.org_id, parse_chain_sync(sync_yaml("mine")))
    publish = pb.PublishDatasetRequest(
        name="mine_blocks", chain_sync_stream=pb.ChainSyncStreamSource(sync_name="mine", dataset_key="blocks")
    )
    calls = {
        "ListDatasets": lambda md: stub.ListDatasets(pb.ListDatasetsRequest(), metadata=md),
        "GetDataset": lambda md: stub.GetDataset(pb.GetDatasetRequest(name="mine.blocks"), metadata=md),
        "PublishDataset": lambda md: stub.PublishDataset(publish, metadata=md),
    }
    await assert_bad_credentials_refused(settings, editor, calls)
    viewer = await make_user(platform.pool, settings, "viewer", org_id=editor.org_id)
    await assert_role_refused(viewer, {"PublishDataset": calls["PublishDataset"]})
    assert await _aliases(db) == 0
    # A viewer reads.
    assert (await stub.GetDataset(pb.GetDatasetRequest(name="mine.blocks"), metadata=viewer.metadata)).dataset.name

    # Another org: its dataset and its stream are exactly as absent as missing ones.
    stranger = await make_user(platform.pool, settings, "admin")
    foreign = await refused(calls["GetDataset"], stranger.metadata)
    missing = await refused(
        lambda md: stub.GetDataset(pb.GetDatasetRequest(name="nosuch.blocks"), metadata=md), stranger.metadata
    )
    assert foreign == missing and foreign[:2] == (grpc.StatusCode.NOT_FOUND, "DATASET_NOT_FOUND")
    code, reason, _ = await refused(calls["PublishDataset"], stranger.metadata)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SOURCE_NOT_FOUND")
    listed = await stub.ListDatasets(pb.ListDatasetsRequest(), metadata=stranger.metadata)
    assert list(listed.datasets) == []
    assert await _aliases(db) == 0
    # Names are per org: the other org gives its own stream the same name.
    await ChainSyncRepository(platform.pool).apply(stranger.org_id, parse_chain_sync(sync_yaml("mine")))
    theirs = await stub.PublishDataset(publish, metadata=stranger.metadata)
    assert theirs.created
    # The owner publishes; the server is still serving after every refusal.
    done = await stub.PublishDataset(publish, metadata=editor.metadata)
    assert done.created and list(done.dataset.published_names) == ["mine_blocks"]


async def _deploy_udf_rows(pool: asyncpg.Pool, org_id: str, dag: str, job: str, *, activate: bool) -> str:
    """The rows a DAG deploy and activation leave for a udf job (dags, a version, its job
    with the resolved output dataset, the registered dataset): the registry's view only."""
    dag_id, version_id, ds = uuid.uuid4(), uuid.uuid4(), udf_dataset_uuid(org_id, dag, job)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO dags (id, org_id, name) VALUES ($1, $2, $3)", dag_id, uuid.UUID(org_id), dag)
        await conn.execute(
            "INSERT INTO dag_versions (id, dag_id, org_id, seq, yaml, yaml_sha256) VALUES ($1, $2, $3, 1, 'x', $4)",
            version_id,
            dag_id,
            uuid.UUID(org_id),
            "0" * 64,
        )
        await conn.execute(
            "INSERT INTO dag_jobs (dag_version_id, name, kind, spec, resolved) VALUES ($1, $2, 'udf', '{}', $3::jsonb)",
            version_id,
            job,
            json.dumps({"output_dataset_uuid": ds}),
        )
        await conn.execute(
            "INSERT INTO datasets (id, org_id, name, kind) VALUES ($1, $2, $3, 'versioned')",
            uuid.UUID(ds),
            uuid.UUID(org_id),
            udf_dataset_name(dag, job),
        )
        if activate:
            await conn.execute("UPDATE dags SET active_version_id = $2 WHERE id = $1", dag_id, version_id)
    return ds


async def test_publish_names_a_dag_udf_output_of_the_org_only(
    platform: RunningPlatform, client: DatasetsClient, editor: ApiUser, settings: Settings, db: asyncpg.Connection
) -> None:
    ds = await _deploy_udf_rows(platform.pool, editor.org_id, "transfers", "flag", activate=True)
    stranger = await make_user(platform.pool, settings, "admin")
    await _deploy_udf_rows(platform.pool, stranger.org_id, "theirs", "flag", activate=False)

    unpublished = await client.get("transfers.flag")
    assert not unpublished.published and unpublished.current_version is None
    done = await client.publish("big_transfers", DagOutputSource("transfers", "flag", 0))
    assert done.created and done.dataset.dataset_id == ds and done.dataset.published
    assert (await client.get("big_transfers")).published_names == ("big_transfers",)
    for source in (
        DagOutputSource("transfers", "flag", 1),  # a udf has one output
        DagOutputSource("transfers", "nosuch", 0),
        DagOutputSource("theirs", "flag", 0),  # another org's DAG
    ):
        with pytest.raises(NotFound) as missing:
            await client.publish("other_name", source)
        assert missing.value.reason == "SOURCE_NOT_FOUND"
    with pytest.raises(InvalidArgument) as bad:
        await client.publish("other_name", DagOutputSource("Bad DAG", "flag", 0))
    assert bad.value.reason == "INVALID_SOURCE"
    assert await _aliases(db) == 1


async def test_a_registry_name_made_after_an_alias_wins_and_the_name_stays_one_dataset(
    platform: RunningPlatform,
    client: DatasetsClient,
    editor: ApiUser,
    local_store: LocalObjectStore,
    objects_uri: str,
) -> None:
    await ChainSyncRepository(platform.pool).apply(editor.org_id, parse_chain_sync(sync_yaml("mainnet")))
    await client.publish("late", ChainSyncStreamSource("mainnet", "blocks"))
    ds = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(platform.pool).publish(editor.org_id, "late", ds.publication)
    assert (await client.get("late")).dataset_id == ds.dataset_uuid
    resolved = await DatasetRepository(platform.pool).resolve_published(editor.org_id, "late")
    assert resolved is not None and resolved.dataset_uuid == ds.dataset_uuid
    assert [v for v, _ in resolved.versions] == [ds.dataset_version]


async def test_concurrent_publishes_of_one_name_bind_it_once(
    platform: RunningPlatform, client: DatasetsClient, editor: ApiUser, db: asyncpg.Connection
) -> None:
    await ChainSyncRepository(platform.pool).apply(editor.org_id, parse_chain_sync(sync_yaml("mainnet")))
    sources = [ChainSyncStreamSource("mainnet", "blocks" if i % 2 else "logs") for i in range(12)]
    results = await asyncio.gather(*(client.publish("race", s) for s in sources), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert sum(1 for r in won if r.created) == 1
    winner = next(r.dataset.dataset_id for r in won if r.created)
    assert all(r.dataset.dataset_id == winner for r in won)  # the rest named the same stream: no change
    assert lost and all(isinstance(e, AlreadyExists) and e.reason == "DATASET_NAME_TAKEN" for e in lost)
    assert await db.fetchval("SELECT count(*) FROM dataset_aliases WHERE name = 'race'") == 1
