"""Query and QueryArrow of the public API (user Bearer JWT of a member of the org,
datasets by registry name, org scoped), and the manifest-only fetch for both principals."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import jwt
import pyarrow as pa
import pytest

from tests.datasets import FIXTURE_ROWS, FixtureDataset, blocks_table, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, closed_audit_rows, user_client
from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from trace_platform.core.sql_gate import sql_sha256
from trace_platform.core.user_tokens import issue_user_token

NAME = "fixture.alerts"
SELECT_KEYS = "SELECT dedupe_key FROM dataset ORDER BY dedupe_key"
OTHER_ORG = "00000000-0000-0000-0000-0000000000bb"


@pytest.fixture
async def published(platform: RunningPlatform, local_store: LocalObjectStore, objects_uri: str) -> FixtureDataset:
    ds = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])
    await DatasetRepository(platform.pool).publish(ORG, NAME, ds.publication)
    return ds


@pytest.fixture
async def user(channel: grpc.aio.Channel, settings: Settings) -> ApiQueryClient:
    return await user_client(channel, settings)


async def test_user_auth_required(published: FixtureDataset, channel: grpc.aio.Channel, settings: Settings) -> None:
    with pytest.raises(Unauthenticated) as exc:
        await ApiQueryClient(channel).query(NAME, SELECT_KEYS)
    assert exc.value.reason == "USER_TOKEN_MISSING"
    secret = settings.user_auth.hs256_secret
    assert secret is not None
    bad_tokens = {
        "garbage": "USER_TOKEN_INVALID",
        issue_user_token(
            "a-wrong-secret-of-thirty-two-bytes!!", issuer=settings.user_auth.issuer, subject="x", org_id=ORG
        ): "USER_TOKEN_INVALID",
        issue_user_token(secret, issuer="someone-else", subject="x", org_id=ORG): "USER_TOKEN_INVALID",
        issue_user_token(
            secret, issuer=settings.user_auth.issuer, subject="x", org_id=ORG, now=time.time() - 90_000
        ): "USER_TOKEN_EXPIRED",
        jwt.encode(
            {"iss": settings.user_auth.issuer, "aud": "trace.user", "sub": "x", "org_id": ORG, "exp": 2**31},
            secret,
            "HS256",
        ): "USER_TOKEN_INVALID",  # no iat
        jwt.encode({"sub": "x", "org_id": ORG}, "", "none"): "USER_TOKEN_INVALID",
    }
    for token, reason in bad_tokens.items():
        with pytest.raises(Unauthenticated) as exc:
            await ApiQueryClient(channel, token=token).query(NAME, SELECT_KEYS)
        assert exc.value.reason == reason


async def test_a_verified_token_of_a_non_member_is_refused(
    published: FixtureDataset, channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    """Identity is the membership, not the signature: a good token whose ``sub`` has no
    membership in the token's org reads nothing, and no audit row says it did."""
    secret = settings.user_auth.hs256_secret
    assert secret is not None
    await user_client(channel, settings, org_id=OTHER_ORG, subject="mallory")  # a member elsewhere
    for subject in ("mallory", "nobody-at-all"):
        token = issue_user_token(secret, issuer=settings.user_auth.issuer, subject=subject, org_id=ORG)
        with pytest.raises(PermissionDenied) as exc:
            await ApiQueryClient(channel, token=token).query(NAME, SELECT_KEYS)
        assert exc.value.reason == "NOT_A_MEMBER"
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


async def test_user_query_returns_the_fixture_and_its_version(published: FixtureDataset, user: ApiQueryClient) -> None:
    out = await user.query(NAME, SELECT_KEYS)
    assert [r[0] for r in out.rows] == FIXTURE_ROWS["dedupe_key"]
    assert out.dataset_version == published.dataset_version and out.truncated is False


async def test_datasets_are_org_scoped_and_unknown_names_not_found(
    published: FixtureDataset, channel: grpc.aio.Channel, settings: Settings, user: ApiQueryClient
) -> None:
    outsider = await user_client(channel, settings, org_id=OTHER_ORG)
    for client, name in ((outsider, NAME), (user, "fixture.nothing")):
        with pytest.raises(NotFound) as exc:
            await client.query(name, SELECT_KEYS)
        assert exc.value.reason == "DATASET_NOT_FOUND"
    with pytest.raises(InvalidArgument) as exc2:
        await user.query("../etc", SELECT_KEYS)
    assert exc2.value.reason == "INVALID_DATASET_NAME"


async def test_cutover_switches_readers_to_the_new_version(
    platform: RunningPlatform,
    published: FixtureDataset,
    user: ApiQueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
) -> None:
    newer = write_dataset(local_store, objects_uri, [blocks_table(5)], dataset_uuid=published.dataset_uuid)
    before = await user.query(NAME, "SELECT count(*) FROM dataset")
    await DatasetRepository(platform.pool).publish(ORG, NAME, newer.publication)
    after = await user.query(NAME, "SELECT count(*) FROM dataset")
    assert (before.rows, before.dataset_version) == ([[3]], published.dataset_version)
    assert (after.rows, after.dataset_version) == ([[5]], newer.dataset_version)


async def test_user_gate_rejects_unsafe_sql_and_allows_url_literals(
    published: FixtureDataset, user: ApiQueryClient
) -> None:
    for sql, reason in (
        ("SELECT * FROM read_csv('/etc/passwd')", "TABLE_FUNCTION"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", "NOT_A_SELECT"),
        ("SELECT getenv('HOME')", "DISALLOWED_FUNCTION"),
    ):
        with pytest.raises(InvalidArgument) as exc:
            await user.query(NAME, sql)
        assert exc.value.reason == reason
    out = await user.query(NAME, "SELECT 'https://example.com' FROM dataset LIMIT 1")
    assert out.rows == [["https://example.com"]]


async def test_user_audit_after_success(
    published: FixtureDataset, user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    sql = "SELECT dedupe_key FROM dataset WHERE block_number = 101"
    await user.query(NAME, sql)
    rows = await closed_audit_rows(db)
    assert len(rows) == 1
    row = rows[0]
    ada = await db.fetchval("SELECT id::text FROM users WHERE subject = 'ada'")
    assert (row["user_id"], str(row["org_id"]), row["task_id"], row["rpc"]) == (ada, ORG, None, "query")
    assert (str(row["dataset_uuid"]), row["row_count"]) == (published.dataset_uuid, 1)
    assert row["sql_sha256"] == sql_sha256(sql)


async def test_query_arrow_streams_large_results_unclamped_and_is_audited(
    platform: RunningPlatform,
    user: ApiQueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    db: asyncpg.Connection,
) -> None:
    big = write_dataset(local_store, objects_uri, [blocks_table(40_000), blocks_table(40_000, 40_000)])
    await DatasetRepository(platform.pool).publish(ORG, "chain.blocks", big.publication)
    table = await user.query_arrow("chain.blocks", "SELECT block_number, miner FROM dataset ORDER BY 1")
    assert table.num_rows == 80_000
    assert table.column_names == ["block_number", "miner"]
    assert table.column("block_number").to_pylist() == list(range(80_000))
    [audit] = await closed_audit_rows(db)
    assert (audit["rpc"], audit["row_count"], audit["outcome"]) == ("query_arrow", 80_000, "ok")
    with pytest.raises(InvalidArgument):
        await user.query_arrow("chain.blocks", "SELECT * FROM read_parquet('x')")


class RecordingStore(LocalObjectStore):
    """The real local store, recording every whole-object read the service makes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reads: list[str] = []

    def get_bytes(self, uri: str, max_bytes: int) -> bytes:
        self.reads.append(uri)
        return super().get_bytes(uri, max_bytes)


@pytest.fixture
async def recording_platform(settings: Settings) -> AsyncIterator[tuple[RunningPlatform, RecordingStore]]:
    store = RecordingStore([settings.data_dir / "objects"])
    running = await start_platform(settings, migrate=False, stores=ObjectStores([store]))
    yield running, store
    await running.stop(grace=0.5)


async def test_service_fetches_only_the_manifest_for_task_and_user_queries(
    recording_platform: tuple[RunningPlatform, RecordingStore],
    settings: Settings,
    local_store: LocalObjectStore,
    objects_uri: str,
) -> None:
    running, store = recording_platform
    ds = write_dataset(local_store, objects_uri, [blocks_table(100), blocks_table(100, 100)])
    await DatasetRepository(running.pool).publish(ORG, "chain.blocks", ds.publication)
    async with grpc.aio.insecure_channel(running.addr) as ch:
        dispatcher = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_with_grants(dispatcher, [ds.grant_pb])
        rows = await QueryClient(ch).task_query(
            cap, ref.task_id, ref.attempt, ds.dataset_uuid, "SELECT count(*) FROM dataset"
        )
        assert rows.rows == [[200]]
        assert store.reads == [ds.prefix_uri + "_manifest.json"]
        out = await (await user_client(ch, settings)).query("chain.blocks", "SELECT max(block_number) FROM dataset")
        assert out.rows == [[199]]
        assert set(store.reads) == {ds.prefix_uri + "_manifest.json"}


async def test_dataset_object_missing_is_a_permanent_error(
    platform: RunningPlatform, user: ApiQueryClient, local_store: LocalObjectStore, objects_uri: str
) -> None:
    ds = write_dataset(local_store, objects_uri, [blocks_table(10)])
    await DatasetRepository(platform.pool).publish(ORG, "chain.gone", ds.publication)
    import pathlib

    (pathlib.Path(ds.storage_ref.prefix) / "part-0.parquet").unlink()
    with pytest.raises(FailedPrecondition) as exc:
        await user.query("chain.gone", "SELECT 1 FROM dataset")
    assert exc.value.reason == "DATASET_OBJECT_MISSING"


async def test_publishing_a_version_twice_is_idempotent_and_names_stay_bound(
    platform: RunningPlatform, published: FixtureDataset, db: asyncpg.Connection
) -> None:
    repo = DatasetRepository(platform.pool)
    await repo.publish(ORG, NAME, published.publication)
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 1
    stranger = FixtureDataset(str(uuid.uuid4()), str(uuid.uuid4()), published.storage_ref)
    with pytest.raises(FailedPrecondition) as exc:
        await repo.publish(ORG, NAME, stranger.publication)
    assert exc.value.reason == "DATASET_NAME_TAKEN"
    assert await db.fetchval("SELECT count(*) FROM dataset_versions") == 1
