"""Queries over several datasets, each under the caller's relation name: the public Query
and QueryArrow (registry names, org scoped) and the internal TaskQuery (granted UUIDs).
Real platform, real PostgreSQL, real Parquet datasets registered through the registry."""

from __future__ import annotations

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.datasets import FixtureDataset, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, closed_audit_rows, user_client
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform
from trace_platform.clients.api.query import ApiQueryClient, RelationVersion
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import InvalidArgument, NotFound, PermissionDenied, TraceError
from trace_platform.core.sql_gate import sql_sha256

TXS = pa.table(
    {
        "tx_hash": ["0xa1", "0xa2", "0xa3"],
        "block_number": pa.array([10, 11, 12], pa.int64()),
        "sender_email": ["a@example.com", "b@example.com", "c@example.com"],  # classified
    }
)
LOGS = pa.table(
    {
        "tx_hash": ["0xa1", "0xa1", "0xa3"],
        "log_index": pa.array([0, 1, 0], pa.int64()),
        "topic0": ["t-transfer", "t-approval", "t-transfer"],
        "recipient_email": ["x@example.com", "y@example.com", "z@example.com"],  # classified
    }
)
JOIN = (
    "SELECT t.tx_hash, t.block_number, l.log_index FROM txs t JOIN logs l ON t.tx_hash = l.tx_hash "
    "ORDER BY t.tx_hash, l.log_index"
)
JOINED = [["0xa1", 10, 0], ["0xa1", 10, 1], ["0xa3", 12, 0]]
BOTH = {"txs": "chain.txs", "logs": "chain.logs"}


@pytest.fixture
async def pair(
    platform: RunningPlatform, local_store: LocalObjectStore, objects_uri: str
) -> tuple[FixtureDataset, FixtureDataset]:
    txs = write_dataset(local_store, objects_uri, [TXS])
    logs = write_dataset(local_store, objects_uri, [LOGS.slice(0, 2), LOGS.slice(2)])  # two objects
    repo = DatasetRepository(platform.pool)
    await repo.publish(ORG, "chain.txs", txs.publication, pii_columns=["sender_email"])
    await repo.publish(ORG, "chain.logs", logs.publication, pii_columns=["recipient_email"])
    return txs, logs


@pytest.fixture
async def user(channel: grpc.aio.Channel, settings: Settings) -> ApiQueryClient:
    return await user_client(channel, settings)


async def _pii(db: asyncpg.Connection) -> dict[str, list[str]]:
    rows = await db.fetch("SELECT dataset_uuid::text AS ds, columns FROM pii_access_audit")
    return {r["ds"]: list(r["columns"]) for r in rows}


async def test_a_join_of_two_datasets_reports_each_version_and_audits_both(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    txs, logs = pair
    out = await user.query(BOTH, JOIN)
    assert out.rows == JOINED
    assert out.relations == [
        RelationVersion("txs", "chain.txs", txs.dataset_version),
        RelationVersion("logs", "chain.logs", logs.dataset_version),
    ]
    audits = await closed_audit_rows(db)
    assert sorted((str(a["dataset_uuid"]), str(a["dataset_version"])) for a in audits) == sorted(
        [(txs.dataset_uuid, txs.dataset_version), (logs.dataset_uuid, logs.dataset_version)]
    )
    assert {(a["rpc"], a["outcome"], a["row_count"], a["sql_sha256"]) for a in audits} == {
        ("query", "ok", 3, sql_sha256(JOIN))
    }
    assert await _pii(db) == {}  # neither classified column was read


async def test_classified_columns_of_either_dataset_are_audited_against_their_own_dataset(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    txs, logs = pair
    sql = "SELECT l.recipient_email AS r FROM txs t JOIN logs l USING (tx_hash) WHERE t.block_number = 10"
    out = await user.query(BOTH, sql)
    assert sorted(r[0] for r in out.rows) == ["x@example.com", "y@example.com"]
    await closed_audit_rows(db)
    assert await _pii(db) == {logs.dataset_uuid: ["recipient_email"]}
    await db.execute("DELETE FROM pii_access_audit")
    # Only in a WHERE of the other relation, renamed through a CTE: still its dataset's read.
    sql = "WITH s AS (SELECT sender_email AS e, tx_hash FROM txs) SELECT count(*) FROM s JOIN logs USING (tx_hash)"
    assert (await user.query(BOTH, sql)).rows == [[3]]
    await closed_audit_rows(db)
    assert await _pii(db) == {txs.dataset_uuid: ["sender_email"]}
    await db.execute("DELETE FROM pii_access_audit")
    star = "SELECT * FROM txs JOIN logs USING (tx_hash)"  # every column of both
    await user.query(BOTH, star)
    await closed_audit_rows(db)
    assert await _pii(db) == {txs.dataset_uuid: ["sender_email"], logs.dataset_uuid: ["recipient_email"]}


async def test_a_relation_not_given_is_refused_naming_the_relations_and_nothing_runs(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    for sql in (
        "SELECT * FROM dataset",  # the one-dataset name is not attached here
        "SELECT count(*) FROM txs JOIN blocks USING (block_number)",
        "SELECT * FROM main.txs",
    ):
        with pytest.raises(InvalidArgument) as exc:
            await user.query(BOTH, sql)
        assert exc.value.reason == "DISALLOWED_RELATION", sql
        assert "logs, txs" in exc.value.message
    # One relation attached: the other dataset's relation name means nothing.
    with pytest.raises(InvalidArgument) as exc:
        await user.query({"txs": "chain.txs"}, JOIN)
    assert exc.value.reason == "DISALLOWED_RELATION" and "txs" in exc.value.message
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


@pytest.mark.parametrize(
    ("datasets", "reason"),
    [
        ({"TXS": "chain.txs", "txs": "chain.logs"}, "RELATION_NAME_DUPLICATE"),  # unique after folding
        ({"1txs": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"tx-s": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"select": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"main": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"information_schema": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"duckdb_settings": "chain.txs"}, "RELATION_NAME_INVALID"),
        ({"x" * 64: "chain.txs"}, "RELATION_NAME_INVALID"),
        ({f"r{i}": "chain.txs" for i in range(17)}, "TOO_MANY_DATASETS"),
        ({}, "DATASET_REQUIRED"),
        ({"txs": "../etc"}, "INVALID_DATASET_NAME"),
    ],
)
async def test_bad_relation_names_are_invalid_argument_and_nothing_runs(
    pair: tuple[FixtureDataset, FixtureDataset],
    user: ApiQueryClient,
    db: asyncpg.Connection,
    datasets: dict[str, str],
    reason: str,
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await user.query(datasets, "SELECT 1")
    assert exc.value.reason == reason
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0
    assert (await user.query(BOTH, JOIN)).rows == JOINED  # the server serves on


async def test_sixteen_relations_work_and_one_name_given_twice_reads_one_version(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    many = {f"r{i}": "chain.txs" for i in range(16)}
    sql = "SELECT " + " + ".join(f"(SELECT count(*) FROM r{i})" for i in range(16))
    out = await user.query(many, sql)
    assert out.rows == [[48]]
    assert {r.dataset_version for r in out.relations} == {pair[0].dataset_version}
    assert len(await closed_audit_rows(db)) == 16  # one row per relation read


async def test_an_unknown_or_other_orgs_second_dataset_is_not_found_and_nothing_runs(
    pair: tuple[FixtureDataset, FixtureDataset],
    platform: RunningPlatform,
    user: ApiQueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    db: asyncpg.Connection,
) -> None:
    other = write_dataset(local_store, objects_uri, [TXS])
    await DatasetRepository(platform.pool).publish(
        "00000000-0000-0000-0000-0000000000bb", "other.txs", other.publication
    )
    for name in ("other.txs", "chain.nothing"):
        with pytest.raises(NotFound) as exc:
            await user.query({"txs": "chain.txs", "o": name}, "SELECT count(*) FROM txs, o")
        assert exc.value.reason == "DATASET_NOT_FOUND"
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


async def test_query_arrow_joins_two_datasets_and_sends_their_versions_first(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient, db: asyncpg.Connection
) -> None:
    txs, logs = pair
    versions: list[RelationVersion] = []
    batches = [b async for b in user.query_arrow_batches(BOTH, JOIN, versions=versions)]
    table = pa.Table.from_batches(batches)
    assert [list(r.values()) for r in table.to_pylist()] == JOINED
    assert versions == [
        RelationVersion("txs", "chain.txs", txs.dataset_version),
        RelationVersion("logs", "chain.logs", logs.dataset_version),
    ]
    audits = await closed_audit_rows(db)
    assert sorted(str(a["dataset_uuid"]) for a in audits) == sorted([txs.dataset_uuid, logs.dataset_uuid])
    assert {(a["rpc"], a["row_count"], a["outcome"]) for a in audits} == {("query_arrow", 3, "ok")}


async def test_the_one_dataset_shorthand_and_the_named_form_agree(
    pair: tuple[FixtureDataset, FixtureDataset], user: ApiQueryClient
) -> None:
    short = await user.query("chain.txs", "SELECT count(*) FROM dataset")
    named = await user.query({"dataset": "chain.txs"}, "SELECT count(*) FROM dataset")
    assert short.rows == named.rows == [[3]]
    assert short.dataset_version == named.dataset_version == pair[0].dataset_version


# TaskQuery: the same over datasets the task's token grants.


async def test_task_query_joins_two_granted_datasets(
    pair: tuple[FixtureDataset, FixtureDataset], client: DispatcherClient, query_client: QueryClient
) -> None:
    txs, logs = pair
    ref, cap = await claim_with_grants(client, [txs.grant_pb, logs.grant_pb])
    both = {"txs": txs.dataset_uuid, "logs": logs.dataset_uuid}
    out = await query_client.task_query(cap, ref.task_id, ref.attempt, both, JOIN)
    assert out.rows == JOINED
    assert out.versions == {"txs": txs.dataset_version, "logs": logs.dataset_version}


async def test_task_query_with_an_ungranted_second_dataset_is_refused_and_runs_nothing(
    pair: tuple[FixtureDataset, FixtureDataset],
    client: DispatcherClient,
    query_client: QueryClient,
    db: asyncpg.Connection,
) -> None:
    txs, logs = pair
    ref, cap = await claim_with_grants(client, [txs.grant_pb])  # logs is not granted
    both = {"txs": txs.dataset_uuid, "logs": logs.dataset_uuid}
    with pytest.raises(PermissionDenied) as exc:
        await query_client.task_query(cap, ref.task_id, ref.attempt, both, JOIN)
    assert exc.value.reason == "DATASET_NOT_GRANTED"
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0
    # The granted one alone still answers; naming the other relation in SQL is refused.
    out = await query_client.task_query(
        cap, ref.task_id, ref.attempt, {"txs": txs.dataset_uuid}, "SELECT count(*) FROM txs"
    )
    assert out.rows == [[3]]
    with pytest.raises(InvalidArgument) as bad:
        await query_client.task_query(cap, ref.task_id, ref.attempt, {"txs": txs.dataset_uuid}, JOIN)
    assert bad.value.reason == "DISALLOWED_RELATION"


@pytest.mark.parametrize(
    ("relations", "reason"),
    [
        (("a", "A"), "RELATION_NAME_DUPLICATE"),
        (("a", "from"), "RELATION_NAME_INVALID"),
        (("a", "temp"), "RELATION_NAME_INVALID"),
        (("a", "b;drop"), "RELATION_NAME_INVALID"),
    ],
)
async def test_task_query_bad_relation_names_are_invalid_argument(
    pair: tuple[FixtureDataset, FixtureDataset],
    client: DispatcherClient,
    query_client: QueryClient,
    db: asyncpg.Connection,
    relations: tuple[str, str],
    reason: str,
) -> None:
    txs, logs = pair
    ref, cap = await claim_with_grants(client, [txs.grant_pb, logs.grant_pb])
    both = {relations[0]: txs.dataset_uuid, relations[1]: logs.dataset_uuid}
    with pytest.raises(InvalidArgument) as exc:
        await query_client.task_query(cap, ref.task_id, ref.attempt, both, "SELECT 1")
    assert exc.value.reason == reason
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


async def test_task_query_shorthand_and_datasets_together_are_ambiguous(
    pair: tuple[FixtureDataset, FixtureDataset], client: DispatcherClient, channel: grpc.aio.Channel
) -> None:
    from trace_platform.clients.errors import call
    from trace_platform.core.metadata import TASK_CAPABILITY
    from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc

    txs, logs = pair
    ref, cap = await claim_with_grants(client, [txs.grant_pb, logs.grant_pb])
    req = query_pb2.TaskQueryRequest(
        task_id=ref.task_id,
        attempt=ref.attempt,
        dataset_uuid=txs.dataset_uuid,
        datasets=[query_pb2.TaskQueryDataset(relation="logs", dataset_uuid=logs.dataset_uuid)],
        sql="SELECT 1",
    )
    stub = query_pb2_grpc.QueryServiceStub(channel)
    with pytest.raises(TraceError) as exc:
        await call(stub.TaskQuery(req, metadata=((TASK_CAPABILITY, cap),)))
    assert (type(exc.value), exc.value.reason) == (InvalidArgument, "DATASETS_AMBIGUOUS")


async def test_the_internal_service_no_longer_serves_user_queries(channel: grpc.aio.Channel) -> None:
    """Query and QueryArrow moved to trace.api.v1: the internal service answers UNIMPLEMENTED."""
    call = channel.unary_unary("/trace.v1.QueryService/Query", request_serializer=bytes, response_deserializer=bytes)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(b"")
    assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED
