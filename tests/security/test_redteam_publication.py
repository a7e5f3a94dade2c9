"""Red-team variant of issue 13's publication wall: the Sink's own check of a batch's
location (a second wall behind the Dispatcher's BufferPublish check).

The Sink used to trust the Dispatcher's ``buffered_publishes`` record and read whatever
``batch_uri`` it named with stores that may reach much more than one attempt's scratch
prefix (an S3 store reads every bucket its credentials allow). Each record below names
a well-formed batch outside its own attempt's prefix (another attempt of the same task,
another task, a traversal back out, a dataset version); each must be refused as
``BATCH_LOCATION_NOT_ALLOWED`` before the store is read, writing no event. The record's
own prefix is applied. The Sink is composed by ``build_sink`` as in production, over a
real PostgreSQL and a real local store that can read the whole data directory.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests.integration.conftest import ORG, claim_new
from trace_platform.adapters.objectstore.factory import scratch_uri
from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores
from trace_platform.adapters.postgres.alert_repository import PublishRecord
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.alert_rows import BatchRejected
from trace_platform.core.config import Settings
from trace_platform.core.errors import InvalidArgument, PermissionDenied
from trace_platform.core.storage_paths import attempt_prefix
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.servers.dispatcher.service import MAX_BATCH_URI_CHARS
from trace_platform.servers.sink.app import build_sink
from trace_platform.servers.sink.consumer import SinkProcessor

pytestmark = pytest.mark.integration
HASH = "0x" + "cd" * 32


def _batch() -> bytes:
    row = {
        "dedupe_key": f"k-{uuid.uuid4().hex}",
        "event_time": "2026-01-02T03:04:05Z",
        "severity": "critical",
        "chain_id": 1,
        "block_number": 100,
        "block_hash": HASH,
        "tx_hash": HASH,
        "payload": {},
    }
    return json.dumps(row).encode() + b"\n"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, 1, 4)
    yield pool
    await pool.close()


async def _record(db: asyncpg.Connection, task_id: str, attempt: int, uri: str) -> PublishRecord:
    pid = await db.fetchval(
        "INSERT INTO buffered_publishes (task_id, attempt, org_id, batch_uri, content_type,"
        " batch_size_bytes, dedupe_scope) VALUES ($1, $2, $3, $4, 'application/jsonl', 1, 's') RETURNING id",
        uuid.UUID(task_id),
        attempt,
        ORG,
        uri,
    )
    return PublishRecord(str(pid), task_id, attempt, ORG, uri, "pending")


def _write(uri: str) -> str:
    path = Path(uri.removeprefix("file://"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_batch())
    return uri


async def _task(db: asyncpg.Connection) -> str:
    task_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO tasks (id, org_id, operator, status, max_attempts, attempt)"
        " VALUES ($1, $2, 'x', 'running', 3, 2)",
        task_id,
        ORG,
    )
    return str(task_id)


async def test_the_sink_reads_a_batch_only_under_its_own_attempt_prefix(
    settings: Settings, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    wide = ObjectStores([LocalObjectStore([settings.data_dir])])  # reaches scratch and objects
    processor: SinkProcessor = build_sink(pool, PostgresQueue(pool), settings, wide).consumer._processor
    scratch = scratch_uri(settings)
    mine, other = await _task(db), await _task(db)
    own = attempt_prefix(scratch, mine, 2)
    outside = {
        "another attempt": _write(attempt_prefix(scratch, mine, 1) + "alerts.jsonl"),
        "another task": _write(attempt_prefix(scratch, other, 2) + "alerts.jsonl"),
        "traversal": own + "../../" + other + "/2/alerts.jsonl",
        "prefix look-alike": _write(f"{scratch}/{mine}/22/alerts.jsonl"),
        "a dataset version": _write(f"file://{settings.data_dir}/objects/datasets/{ORG}/v1/alerts.jsonl"),
        "scratch root": _write(f"{scratch}/alerts.jsonl"),
    }
    for what, uri in outside.items():
        record = await _record(db, mine, 2, uri)
        with pytest.raises(BatchRejected) as refused:
            await processor.apply(record, "pending")
        assert refused.value.reason == "BATCH_LOCATION_NOT_ALLOWED", what
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0
    applied = await processor.apply(await _record(db, mine, 2, _write(own + "alerts.jsonl")), "pending")
    assert applied is not None and applied.new_events == 1
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 1


def test_the_reader_cannot_be_made_without_its_scratch_prefix() -> None:
    """Fail closed by construction: no default that would skip the check."""
    from trace_platform.servers.sink.consumer import BatchReader

    with pytest.raises(TypeError):
        BatchReader(ObjectStores([]), 1)  # type: ignore[call-arg]


async def test_an_overlong_batch_uri_is_invalid_argument_and_writes_nothing(
    served: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    """Under the attempt's own prefix but megabytes long: it reached the unique index and
    came back INTERNAL. Now INVALID_BATCH_URI before anything is written; a long but
    storable one still works."""
    client = DispatcherClient(served, worker_token=settings.worker_token, admin_token=settings.admin_token)
    ref, cap = await claim_new(client)
    own = attempt_prefix(scratch_uri(settings), ref.task_id, ref.attempt)
    for length in (MAX_BATCH_URI_CHARS + 1, 3_000_000):
        uri = own + "a" * (length - len(own))
        with pytest.raises(InvalidArgument) as refused:
            await client.buffer_publish(ref, cap, uri, 1)
        assert refused.value.reason == "INVALID_BATCH_URI", length
    assert await db.fetchval("SELECT count(*) FROM buffered_publishes") == 0
    longest = own + "b" * (MAX_BATCH_URI_CHARS - len(own))
    assert (await client.buffer_publish(ref, cap, longest, 1)).publish_id


OTHER_ORG = "00000000-0000-0000-0000-0000000000bb"


async def test_events_may_not_name_another_orgs_dataset(
    served: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    """EmitEvents and CompleteTask events were recorded for any dataset UUID: a task of
    one org wrote lineage records about another org's dataset. Refused (nothing written,
    the attempt still running); the task's own org's datasets and unknown ones are not."""
    client = DispatcherClient(served, worker_token=settings.worker_token, admin_token=settings.admin_token)
    theirs, ours = uuid.uuid4(), uuid.uuid4()
    for ds, org in ((theirs, OTHER_ORG), (ours, ORG)):
        await db.execute("INSERT INTO datasets (id, org_id, name) VALUES ($1, $2, $3)", ds, org, f"n{ds.hex[:6]}")
    ref, cap = await claim_new(client)

    def event(ds: uuid.UUID) -> common_pb2.DatasetEvent:
        return common_pb2.DatasetEvent(dataset_uuid=str(ds), dataset_version=str(uuid.uuid4()), cursor=1)

    with pytest.raises(PermissionDenied) as emitted:
        await client.emit_events(ref, cap, [event(ours), event(theirs)])
    assert emitted.value.reason == "EVENT_NOT_ALLOWED"
    with pytest.raises(PermissionDenied) as completed:
        await client.complete(ref, cap, events=[event(theirs)])
    assert completed.value.reason == "EVENT_NOT_ALLOWED"
    assert await db.fetchval("SELECT count(*) FROM task_events") == 0
    assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"
    assert await client.emit_events(ref, cap, [event(ours), event(uuid.uuid4())]) == 2
    await client.complete(ref, cap, events=[event(ours)])
    assert await db.fetchval("SELECT count(*) FROM task_events") == 3
