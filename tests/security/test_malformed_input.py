"""Attack: malformed input that used to answer INTERNAL (issue 13, hole 8), and sink
rows whose ``event_time`` PostgreSQL (or the driver) cannot store.

Against one real platform (every service on one address, real PostgreSQL): each input
is INVALID_ARGUMENT with a reason code in ``google.rpc.ErrorInfo``, and nothing is
written. The class is tested too: every RPC of every service refuses a NUL in a string
field, before its servicer (or PostgreSQL) sees it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.conftest import eventually
from tests.integration.conftest import ORG, claim_new
from tests.integration.test_sink_delivery import jsonl, publish, rows_for
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings, SinkSettings
from trace_platform.core.metadata import ADMIN_TOKEN, WORKER_TOKEN
from trace_platform.gen.trace.api.v1 import query_pb2 as api_query_pb2
from trace_platform.gen.trace.v1 import (
    chain_sync_pb2,
    dispatcher_pb2,
    invoker_pb2,
    query_pb2,
    sink_pb2,
)

pytestmark = pytest.mark.integration
SERVICE_MODULES = (dispatcher_pb2, chain_sync_pb2, invoker_pb2, query_pb2, sink_pb2, api_query_pb2)
DEEP = 100_000


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningPlatform]:
    fast = replace(settings, sink=SinkSettings(poll_interval_seconds=0.1, retry_base_seconds=0.05))
    platform = await start_platform(fast, migrate=False)
    yield platform
    await platform.stop(grace=0.5)


@pytest.fixture
async def channel(running: RunningPlatform) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        yield ch


def metadata(settings: Settings) -> tuple[tuple[str, str], ...]:
    assert settings.admin_token and settings.worker_token
    return ((ADMIN_TOKEN, settings.admin_token), (WORKER_TOKEN, settings.worker_token))


def reason_of(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, f"no status details: {err.code()} {err.details()}"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


async def refused(call: Any) -> str:
    """Await ``call``; it must fail INVALID_ARGUMENT. Returns the reason code."""
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (exc.value.code(), exc.value.details())
    return reason_of(exc.value)


async def written(db: asyncpg.Connection) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM tasks"),
        await db.fetchval("SELECT count(*) FROM task_attempts"),
        await db.fetchval("SELECT count(*) FROM chain_sync_jobs"),
    )


BAD_CONFIG_JSON = [
    ('{"a": "\\u0000"}', "NUL_CHARACTER"),  # PostgreSQL jsonb refuses \u0000
    ('{"k\\u0000": 1}', "NUL_CHARACTER"),
    ('{"a": "\\ud800"}', "INVALID_UNICODE"),  # a lone surrogate
    ('{"a": "\\udfff x"}', "INVALID_UNICODE"),
    ('{"a": NaN}', "INVALID_JSON"),
    ('{"a": Infinity}', "INVALID_JSON"),
    ('{"a": -Infinity}', "INVALID_JSON"),
    ('{"a": 1e400}', "INVALID_JSON"),  # JSON, but a float overflowing to infinity
    ('{"a": ' + "9" * 5000 + "}", "INVALID_JSON"),  # beyond Python's integer digit limit
    ('{"a": 1, "a": 2}', "DUPLICATE_KEY"),
    ('{"a": ' + "[" * DEEP + "]" * DEEP + "}", "JSON_TOO_DEEP"),  # 100k levels: RecursionError
    ('{"a": ' + '{"b": ' * 200 + "1" + "}" * 200 + "}", "JSON_TOO_DEEP"),  # under the recursion limit
]


@pytest.mark.parametrize(("config_json", "reason"), BAD_CONFIG_JSON, ids=[r for _, r in BAD_CONFIG_JSON])
@pytest.mark.parametrize("field", ["config_json", "inputs_json"])
async def test_create_tasks_refuses_json_postgres_cannot_store_and_writes_nothing(
    channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection, field: str, config_json: str, reason: str
) -> None:
    if field == "inputs_json":  # inputs are a JSON list
        config_json = "[" + config_json + "]"
    good = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop", config_json="{}")
    bad = dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop", **{field: config_json})
    call = channel.unary_unary(
        "/trace.v1.DispatcherService/CreateTasks",
        request_serializer=dispatcher_pb2.CreateTasksRequest.SerializeToString,
        response_deserializer=dispatcher_pb2.CreateTasksResponse.FromString,
    )
    got = await refused(call(dispatcher_pb2.CreateTasksRequest(tasks=[good, bad]), metadata=metadata(settings)))
    assert got == reason
    assert await written(db) == (0, 0, 0)


async def test_claim_with_a_nul_in_worker_id_is_refused_and_leaves_the_task_queued(
    channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    client = DispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)
    [task_id] = await client.create_tasks([dispatcher_pb2.TaskSpec(org_id=ORG, operator="noop")])
    claim = channel.unary_unary(
        "/trace.v1.DispatcherService/ClaimTask",
        request_serializer=dispatcher_pb2.ClaimTaskRequest.SerializeToString,
        response_deserializer=dispatcher_pb2.ClaimTaskResponse.FromString,
    )
    for worker_id in ("w\x00", "\x00", "worker-\x00-1"):
        request = dispatcher_pb2.ClaimTaskRequest(task_id=task_id, worker_id=worker_id)
        assert await refused(claim(request, metadata=metadata(settings))) == "NUL_CHARACTER"
    row = await db.fetchrow("SELECT status, worker_id FROM tasks WHERE id = $1", uuid.UUID(task_id))
    assert (row["status"], row["worker_id"]) == ("queued", None)
    assert await db.fetchval("SELECT count(*) FROM task_attempts") == 0


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (-62_135_596_801, 0), (0, 1_000_000_000), (0, -1)],
)
async def test_a_timestamp_out_of_its_range_is_refused(
    channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection, seconds: int, nanos: int
) -> None:
    """InvokeRequest.lease_expires_at is the Timestamp a caller sends (2^62 seconds used
    to overflow datetime in the servicer: INTERNAL)."""
    request = invoker_pb2.InvokeRequest(
        task_id=str(uuid.uuid4()),
        attempt=1,
        lease_token=str(uuid.uuid4()),
        capability_token="x",
        bundle_url="file:///nonexistent.tar.gz",
    )
    request.lease_expires_at.seconds = seconds
    request.lease_expires_at.nanos = nanos
    invoke = channel.unary_unary(
        "/trace.v1.RuntimeInvokerService/Invoke",
        request_serializer=invoker_pb2.InvokeRequest.SerializeToString,
        response_deserializer=invoker_pb2.InvokeResponse.FromString,
    )
    assert await refused(invoke(request, metadata=metadata(settings))) == "INVALID_TIMESTAMP"
    assert await written(db) == (0, 0, 0)


def _all_methods() -> list[tuple[str, str, Descriptor, bool]]:
    out = []
    for module in SERVICE_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out.append((service.full_name, method.name, method.input_type, method.server_streaming))
    return out


def _with_nul_everywhere(desc: Descriptor, depth: int = 0) -> Message:
    """A request of type ``desc`` whose every string field (nested too) holds a NUL."""
    msg = GetMessageClass(desc)()
    for field in desc.fields:
        if field.type == FieldDescriptor.TYPE_STRING:
            if field.is_repeated:
                getattr(msg, field.name).append("x\x00")
            else:
                setattr(msg, field.name, "x\x00")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3 and field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                continue
            if field.message_type.full_name == "google.protobuf.Timestamp":
                continue
            child = _with_nul_everywhere(field.message_type, depth + 1)
            if field.is_repeated:
                getattr(msg, field.name).append(child)
            else:
                getattr(msg, field.name).CopyFrom(child)
    return msg


METHODS = _all_methods()


@pytest.mark.parametrize(("service", "method", "input_type", "streaming"), METHODS, ids=[m[1] for m in METHODS])
async def test_every_rpc_refuses_a_nul_in_its_strings_before_the_database(
    channel: grpc.aio.Channel,
    settings: Settings,
    db: asyncpg.Connection,
    service: str,
    method: str,
    input_type: Descriptor,
    streaming: bool,
) -> None:
    request = _with_nul_everywhere(input_type)
    if not any(f.type == FieldDescriptor.TYPE_STRING for f in input_type.fields) and request.ByteSize() == 0:
        pytest.skip(f"{method} takes no string")
    path = f"/{service}/{method}"
    serialize = type(request).SerializeToString
    if streaming:
        stream = channel.unary_stream(path, request_serializer=serialize)
        call: Any = stream(request, metadata=metadata(settings))

        async def drain() -> None:
            async for _ in call:
                pass

        assert await refused(drain()) == "NUL_CHARACTER"
    else:
        unary = channel.unary_unary(path, request_serializer=serialize)
        assert await refused(unary(request, metadata=metadata(settings))) == "NUL_CHARACTER"
    assert await written(db) == (0, 0, 0)


async def test_a_request_that_does_not_decode_is_malformed_not_internal(
    channel: grpc.aio.Channel, settings: Settings
) -> None:
    """A string field holding a UTF-8-encoded lone surrogate (ED A0 80) cannot be decoded."""
    raw = b"\x0a\x03\xed\xa0\x80"  # field 1 (task_id), length 3
    call = channel.unary_unary("/trace.v1.DispatcherService/GetTask", request_serializer=lambda b: b)
    assert await refused(call(raw, metadata=metadata(settings))) == "MALFORMED_REQUEST"
    truncated = b"\x0a\x10abc"
    assert await refused(call(truncated, metadata=metadata(settings))) == "MALFORMED_REQUEST"


async def test_apply_chain_sync_with_a_nul_writes_no_job(
    channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    apply = channel.unary_unary(
        "/trace.v1.ChainSyncService/ApplyChainSync",
        request_serializer=chain_sync_pb2.ApplyChainSyncRequest.SerializeToString,
        response_deserializer=chain_sync_pb2.ApplyChainSyncResponse.FromString,
    )
    yaml = "name: x\x00y\nchain_id: 1\n"
    request = chain_sync_pb2.ApplyChainSyncRequest(org_id=ORG, yaml=yaml)
    assert await refused(apply(request, metadata=metadata(settings))) == "NUL_CHARACTER"
    assert await written(db) == (0, 0, 0)


async def test_a_recursion_error_in_a_servicer_is_invalid_argument_not_internal(
    channel: grpc.aio.Channel, settings: Settings, db: asyncpg.Connection
) -> None:
    """30,000 levels of YAML flow lists fit the 64 KiB limit and make the YAML parser
    recurse past Python's limit inside the servicer: the error boundary answers
    INVALID_ARGUMENT, as for any input the server cannot walk, and writes nothing."""
    apply = channel.unary_unary(
        "/trace.v1.ChainSyncService/ApplyChainSync",
        request_serializer=chain_sync_pb2.ApplyChainSyncRequest.SerializeToString,
        response_deserializer=chain_sync_pb2.ApplyChainSyncResponse.FromString,
    )
    yaml = "name: deep\nstreams: " + "[" * 30_000 + "]" * 30_000 + "\n"
    request = chain_sync_pb2.ApplyChainSyncRequest(org_id=ORG, yaml=yaml)
    assert await refused(apply(request, metadata=metadata(settings))) == "INPUT_TOO_DEEP"
    assert await written(db) == (0, 0, 0)


# ---- Sink: event_time values PostgreSQL or the driver cannot store ---------------------

UNSTORABLE_EVENT_TIMES = [
    "0000-01-01T00:00:00Z",  # year 0
    "10000-01-01T00:00:00Z",  # year 10000
    "294277-01-01T00:00:00Z",  # past PostgreSQL's timestamptz
    "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
    "0001-01-01T00:00:00+01:00",  # year 0 in UTC
    "NaN",
    "infinity",
    "2026-02-30T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "2026-12-31T23:59:60Z",  # a leap second: PostgreSQL rolls it over, Python refuses it
]


@pytest.mark.parametrize("event_time", UNSTORABLE_EVENT_TIMES)
async def test_sink_dead_letters_a_batch_with_an_unstorable_event_time(
    running: RunningPlatform, settings: Settings, db: asyncpg.Connection, event_time: str
) -> None:
    """The batch is refused by validation (reason INVALID_TIMESTAMP, the row named), put
    to the dead-letter queue whole, and no row of it is stored."""
    async with grpc.aio.insecure_channel(running.addr) as ch:
        client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_new(client)
        rows = rows_for(None, 3)
        rows[1]["event_time"] = event_time
        publish_id, _, _ = await publish(client, ref, cap, jsonl(rows))

    async def dead_letter() -> Any:
        return await db.fetchrow("SELECT * FROM sink_dead_letters WHERE publish_id = $1", uuid.UUID(publish_id))

    letter = await eventually(dead_letter)
    assert (letter["reason"], letter["row_number"]) == ("INVALID_TIMESTAMP", 2)
    assert await db.fetchval("SELECT count(*) FROM alert_events") == 0


def test_the_nul_sweep_covers_every_service_in_the_protos() -> None:
    """A service added to proto/ without being listed here would escape the sweep above."""
    declared = {
        f"trace.v1.{m.group(1)}"
        for proto in (Path(__file__).parents[2] / "proto" / "trace" / "v1").glob("*.proto")
        for m in re.finditer(r"^service (\w+)", proto.read_text(), re.MULTILINE)
    }
    swept = {s for s, _, _, _ in METHODS}
    assert declared and declared <= swept  # every internal service (and the public QueryService)
    assert "trace.api.v1.QueryService" in swept
