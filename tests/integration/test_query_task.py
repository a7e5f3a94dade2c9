"""TaskQuery against a real server and PostgreSQL: the reference's task-query test list
(auth, grants, storage and manifest checks, manifest-only fetch, fixture rows, audit)
plus limits, PII audit, deadlines and the concurrency cap."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pytest

from tests.conftest import eventually
from tests.datasets import FIXTURE_ROWS, FixtureDataset, blocks_table, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, closed_audit_rows, refuse_audit_writes
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient, QueryRows
from trace_platform.core.config import Settings
from trace_platform.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from trace_platform.core.keys import KeyRing, KeyStore, SigningKey
from trace_platform.core.sql_gate import sql_sha256
from trace_platform.core.tokens import CapabilityClaims, TokenIssuer

SELECT_KEYS = "SELECT dedupe_key FROM dataset ORDER BY dedupe_key"


@pytest.fixture
def fixture_ds(local_store: LocalObjectStore, objects_uri: str) -> FixtureDataset:
    return write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])


async def _task(client: DispatcherClient, *datasets: FixtureDataset) -> tuple[str, int, str]:
    ref, cap = await claim_with_grants(client, [d.grant_pb for d in datasets])
    return ref.task_id, ref.attempt, cap


def _issuer(settings: Settings, ring: KeyRing | None = None) -> TokenIssuer:
    assert settings.tokens.key_dir is not None
    return TokenIssuer(settings.tokens.issuer, 300, ring or KeyStore(settings.tokens.key_dir).load())


async def test_missing_token_is_unauthenticated(
    platform: RunningPlatform, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    with pytest.raises(Unauthenticated) as exc:
        await query_client.task_query("", str(uuid.uuid4()), 1, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "CAPABILITY_TOKEN_MISSING"


async def test_invalid_and_foreign_tokens_are_unauthenticated(
    settings: Settings, client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, _ = await _task(client, fixture_ds)
    with pytest.raises(Unauthenticated):
        await query_client.task_query("not-a-jwt", task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    foreign = TokenIssuer(settings.tokens.issuer, 300, KeyRing(SigningKey.generate()))
    token = foreign.issue(CapabilityClaims(ORG, task_id, attempt, (fixture_ds.grant,), (fixture_ds.prefix_uri,)))
    with pytest.raises(Unauthenticated) as exc:
        await query_client.task_query(token, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "CAPABILITY_TOKEN_UNKNOWN_KEY"


async def test_token_must_match_task_and_attempt(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    for other_task, other_attempt in ((str(uuid.uuid4()), attempt), (task_id, attempt + 1)):
        with pytest.raises(PermissionDenied) as exc:
            await query_client.task_query(cap, other_task, other_attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
        assert exc.value.reason == "TOKEN_TASK_MISMATCH"


async def test_dataset_grant_required(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, cap = await _task(client)
    with pytest.raises(PermissionDenied) as exc:
        await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "DATASET_NOT_GRANTED"


async def test_grant_must_match_the_requested_dataset(
    client: DispatcherClient,
    query_client: QueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    fixture_ds: FixtureDataset,
) -> None:
    other = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)])
    task_id, attempt, cap = await _task(client, fixture_ds)
    with pytest.raises(PermissionDenied) as exc:
        await query_client.task_query(cap, task_id, attempt, other.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "DATASET_NOT_GRANTED"
    rows = await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert [r[0] for r in rows.rows] == FIXTURE_ROWS["dedupe_key"]


async def test_storage_ref_must_lie_under_the_token_read_prefixes(
    settings: Settings, client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, _ = await _task(client, fixture_ds)
    issuer = _issuer(settings)
    sibling = fixture_ds.prefix_uri.rstrip("/") + "-other/"
    for prefixes in ((), (sibling,), (fixture_ds.prefix_uri + "deeper/",)):
        token = issuer.issue(CapabilityClaims(ORG, task_id, attempt, (fixture_ds.grant,), prefixes))
        with pytest.raises(PermissionDenied) as exc:
            await query_client.task_query(token, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
        assert exc.value.reason == "STORAGE_NOT_GRANTED"
    no_ref = replace(fixture_ds.grant, storage_ref=None)
    token = issuer.issue(CapabilityClaims(ORG, task_id, attempt, (no_ref,), (fixture_ds.prefix_uri,)))
    with pytest.raises(FailedPrecondition) as exc2:
        await query_client.task_query(token, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc2.value.reason == "STORAGE_REF_MISSING"


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (["../escape.parquet"], "MANIFEST_KEY_OUTSIDE_PREFIX"),
        (["/etc/passwd.parquet"], "MANIFEST_KEY_OUTSIDE_PREFIX"),
        (["a/../../x.parquet"], "MANIFEST_KEY_OUTSIDE_PREFIX"),
        (["s3://other-bucket/x.parquet"], "MANIFEST_KEY_OUTSIDE_PREFIX"),
        (["part.csv"], "MANIFEST_KEY_OUTSIDE_PREFIX"),
    ],
)
async def test_manifest_keys_must_lie_under_the_dataset_prefix(
    client: DispatcherClient,
    query_client: QueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    keys: list[str],
    reason: str,
) -> None:
    bad = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)], manifest_keys=keys)
    task_id, attempt, cap = await _task(client, bad)
    with pytest.raises(FailedPrecondition) as exc:
        await query_client.task_query(cap, task_id, attempt, bad.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [(b"{not json", "MANIFEST_INVALID"), (b'{"format": "x"}', "MANIFEST_INVALID"), (b"", "MANIFEST_INVALID")],
)
async def test_malformed_manifest_is_a_permanent_error(
    client: DispatcherClient,
    query_client: QueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    manifest: bytes,
    reason: str,
) -> None:
    bad = write_dataset(local_store, objects_uri, [pa.table(FIXTURE_ROWS)], manifest_bytes=manifest)
    task_id, attempt, cap = await _task(client, bad)
    with pytest.raises(FailedPrecondition) as exc:
        await query_client.task_query(cap, task_id, attempt, bad.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == reason


async def test_missing_manifest_is_a_permanent_error(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    (Path(fixture_ds.storage_ref.prefix) / "_manifest.json").unlink()
    task_id, attempt, cap = await _task(client, fixture_ds)
    with pytest.raises(FailedPrecondition) as exc:
        await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "MANIFEST_MISSING"


async def test_allowed_select_returns_the_deterministic_fixture(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    rows = await query_client.task_query(
        cap, task_id, attempt, fixture_ds.dataset_uuid, "SELECT dedupe_key, block_number FROM dataset ORDER BY 2"
    )
    assert rows.columns == [("dedupe_key", "VARCHAR"), ("block_number", "BIGINT")]
    assert rows.rows == [list(r) for r in zip(FIXTURE_ROWS["dedupe_key"], FIXTURE_ROWS["block_number"], strict=True)]
    assert rows.truncated is False


async def test_url_literal_in_an_expression_is_not_overblocked(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    rows = await query_client.task_query(
        cap, task_id, attempt, fixture_ds.dataset_uuid, "SELECT 'https://example.com' AS url FROM dataset LIMIT 1"
    )
    assert rows.rows == [["https://example.com"]]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("INSTALL httpfs", "NOT_A_SELECT"),
        ("LOAD httpfs", "NOT_A_SELECT"),
        ("ATTACH 'x.db' AS x", "NOT_A_SELECT"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "TABLE_FUNCTION"),
        ("SELECT * FROM read_csv_auto('s3://bucket/x.csv')", "TABLE_FUNCTION"),
        ("SELECT * FROM 'data.parquet'", "STRING_RELATION"),
        ("SELECT * FROM dataset; SELECT 1", "MULTIPLE_STATEMENTS"),
        ("SELECT current_setting('temp_directory')", "DISALLOWED_FUNCTION"),
        ("SELECT * FROM other_table", "DISALLOWED_RELATION"),
    ],
)
async def test_gate_rejects_unsafe_sql_with_its_reason_and_writes_no_audit(
    client: DispatcherClient,
    query_client: QueryClient,
    fixture_ds: FixtureDataset,
    db: asyncpg.Connection,
    sql: str,
    reason: str,
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    with pytest.raises(InvalidArgument) as exc:
        await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, sql)
    assert exc.value.reason == reason
    assert sql not in exc.value.message
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 0


async def test_audit_row_after_success_holds_the_hash_never_the_sql(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset, db: asyncpg.Connection
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    sql = "SELECT dedupe_key FROM dataset WHERE dedupe_key = 'dedupe-002'"
    rows = await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, sql)
    assert rows.rows == [["dedupe-002"]]
    # The row is on record when the answer arrives; its outcome follows just after.
    assert await db.fetchval("SELECT count(*) FROM query_audit") == 1
    audit = await closed_audit_rows(db)
    assert len(audit) == 1
    row = audit[0]
    assert (row["outcome"], row["failure_reason"]) == ("ok", None)
    assert (str(row["org_id"]), str(row["task_id"]), row["attempt"]) == (ORG, task_id, attempt)
    assert (str(row["dataset_uuid"]), str(row["dataset_version"])) == (
        fixture_ds.dataset_uuid,
        fixture_ds.dataset_version,
    )
    assert row["row_count"] == 1 and row["user_id"] is None and row["rpc"] == "task_query"
    assert row["sql_sha256"] == sql_sha256(sql)
    assert row["duration_ms"] >= 0
    # No table anywhere holds the SQL text.
    dump = await db.fetchval("SELECT string_agg(t::text, '') FROM (SELECT * FROM query_audit) t")
    assert "dedupe-002" not in dump


async def test_limit_is_clamped_and_truncation_reported(
    client: DispatcherClient, query_client: QueryClient, local_store: LocalObjectStore, objects_uri: str
) -> None:
    big = write_dataset(local_store, objects_uri, [blocks_table(6_000), blocks_table(6_000, 6_000)])
    task_id, attempt, cap = await _task(client, big)
    sql = "SELECT block_number FROM dataset ORDER BY block_number"
    cases = [(0, 1000, True), (5, 5, True), (-3, 1, True), (50_000, 10_000, True), (12_000, 10_000, True)]
    for limit, expected_rows, truncated in cases:
        rows = await query_client.task_query(cap, task_id, attempt, big.dataset_uuid, sql, limit=limit)
        assert (len(rows.rows), rows.truncated) == (expected_rows, truncated), limit
        assert rows.rows[0] == [0]
    small = await query_client.task_query(cap, task_id, attempt, big.dataset_uuid, f"{sql} LIMIT 7", limit=7)
    assert (len(small.rows), small.truncated) == (7, False)


async def test_pii_access_is_audited_for_classified_columns_only(
    platform: RunningPlatform,
    client: DispatcherClient,
    query_client: QueryClient,
    fixture_ds: FixtureDataset,
    db: asyncpg.Connection,
) -> None:
    await DatasetRepository(platform.pool).publish(ORG, "fixture.alerts", fixture_ds.publication, ["email"])
    task_id, attempt, cap = await _task(client, fixture_ds)
    ask = [
        ("SELECT dedupe_key FROM dataset", 0),
        ("SELECT count(*) FROM dataset", 0),
        ("SELECT upper(email) AS e FROM dataset", 1),
        ("SELECT * FROM dataset", 1),
    ]
    for sql, pii_rows in ask:
        before = await db.fetchval("SELECT count(*) FROM pii_access_audit")
        await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, sql)
        assert await db.fetchval("SELECT count(*) FROM pii_access_audit") - before == pii_rows, sql
    row = await db.fetchrow("SELECT * FROM pii_access_audit ORDER BY id LIMIT 1")
    assert row["columns"] == ["email"] and str(row["task_id"]) == task_id and str(row["org_id"]) == ORG


SLOW = "SELECT count(*) FROM dataset a, dataset b, dataset c WHERE a.gas_used + b.gas_used > c.gas_used"


@dataclass
class OwnPlatform:
    """A platform of the test's own (tuned query settings) with a task granted 3,000 blocks."""

    client: QueryClient
    dataset: FixtureDataset
    task_id: str
    attempt: int
    capability: str
    running: RunningPlatform

    def query(self, sql: str) -> Awaitable[QueryRows]:
        return self.client.task_query(self.capability, self.task_id, self.attempt, self.dataset.dataset_uuid, sql)


@contextlib.asynccontextmanager
async def own_platform(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str, **query: object
) -> AsyncIterator[OwnPlatform]:
    tuned = replace(settings, query=replace(settings.query, **query))
    running = await start_platform(tuned, migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            dispatcher = DispatcherClient(ch, worker_token=tuned.worker_token, admin_token=tuned.admin_token)
            big = write_dataset(local_store, objects_uri, [blocks_table(3_000)])
            task_id, attempt, cap = await _task(dispatcher, big)
            yield OwnPlatform(QueryClient(ch), big, task_id, attempt, cap, running)
    finally:
        await running.stop(grace=0.5)


async def test_deadline_interrupts_the_query_and_the_server_keeps_serving(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str, db: asyncpg.Connection
) -> None:
    async with own_platform(settings, local_store, objects_uri, task_timeout_seconds=0.3) as own:
        with pytest.raises(DeadlineExceeded) as exc:
            await own.query(SLOW)
        assert exc.value.reason == "QUERY_TIMEOUT"
        ok = await own.query("SELECT count(*) FROM dataset")
        assert ok.rows == [[3_000]]
    # Both queries read the dataset: both are audited, the interrupted one as failed.
    rows = await closed_audit_rows(db)
    assert [(r["outcome"], r["failure_reason"], r["row_count"]) for r in rows] == [
        ("failed", "QUERY_TIMEOUT", None),
        ("ok", None, 1),
    ]


async def test_the_audit_row_is_written_while_the_query_runs(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str, db: asyncpg.Connection
) -> None:
    async with own_platform(settings, local_store, objects_uri, task_timeout_seconds=3.0) as own:
        query = asyncio.create_task(own.query(SLOW))

        async def opened() -> str | None:
            outcome: str | None = await db.fetchval("SELECT outcome FROM query_audit")
            return outcome

        assert await eventually(opened, timeout=2.5) == "running"
        assert not query.done()  # on record before the query has finished
        with pytest.raises(DeadlineExceeded):
            await query
    [row] = await closed_audit_rows(db)
    assert (row["outcome"], row["failure_reason"], str(row["task_id"])) == ("failed", "QUERY_TIMEOUT", own.task_id)
    assert row["duration_ms"] >= 2_900


async def test_a_query_that_cannot_be_audited_returns_nothing(
    client: DispatcherClient, query_client: QueryClient, fixture_ds: FixtureDataset, db: asyncpg.Connection
) -> None:
    task_id, attempt, cap = await _task(client, fixture_ds)
    await refuse_audit_writes(db, "INSERT")
    with pytest.raises(Unavailable) as exc:
        await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "AUDIT_UNAVAILABLE"
    await db.execute("DROP TRIGGER refuse ON query_audit")
    rows = await query_client.task_query(cap, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert len(rows.rows) == len(FIXTURE_ROWS["dedupe_key"])
    assert [r["outcome"] for r in await closed_audit_rows(db)] == ["ok"]


async def test_concurrency_cap_refuses_with_resource_exhausted(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str, db: asyncpg.Connection
) -> None:
    capped = {"slots": 1, "admission_queue": 0, "task_timeout_seconds": 2.0}
    async with own_platform(settings, local_store, objects_uri, **capped) as own:
        first = asyncio.create_task(own.query(SLOW))

        async def running() -> str | None:  # the audit row opens once the query holds its slot
            outcome: str | None = await db.fetchval("SELECT outcome FROM query_audit")
            return outcome

        assert await eventually(running, timeout=2.0) == "running"
        assert not first.done()
        with pytest.raises(ResourceExhausted) as exc:
            await own.query("SELECT 1 FROM dataset LIMIT 1")
        assert exc.value.reason == "QUERY_CAPACITY"
        with pytest.raises(DeadlineExceeded):
            await first
        ok = await own.query("SELECT count(*) FROM dataset")
        assert ok.rows == [[3_000]]


async def test_grant_pointing_at_another_versions_files_is_refused(
    settings: Settings,
    client: DispatcherClient,
    query_client: QueryClient,
    local_store: LocalObjectStore,
    objects_uri: str,
    fixture_ds: FixtureDataset,
) -> None:
    other = write_dataset(local_store, objects_uri, [blocks_table(10)])
    task_id, attempt, _ = await _task(client, fixture_ds)
    # A signed grant for fixture_ds whose storage ref names the other version's prefix.
    forged = replace(fixture_ds.grant, storage_ref=other.storage_ref)
    token = _issuer(settings).issue(CapabilityClaims(ORG, task_id, attempt, (forged,), (other.prefix_uri,)))
    with pytest.raises(FailedPrecondition) as exc:
        await query_client.task_query(token, task_id, attempt, fixture_ds.dataset_uuid, SELECT_KEYS)
    assert exc.value.reason == "MANIFEST_MISMATCH"
