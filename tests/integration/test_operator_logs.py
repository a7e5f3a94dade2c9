"""Logs an operator can act on, read from a real platform's JSON log output: each failure
(a failed task attempt, a task or chain_sync range failed for good, a lease that ran out,
a dead-lettered batch, a delivery that gave up) is exactly one line at WARNING or above
with its ids and reason code; every line logged while a task runs names the task and
attempt; no line carries the free-text error (which may quote SQL or a URL)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, claim_new, fast_alert_settings
from tests.integration.test_sink_delivery import jsonl, publish, publish_status, rows_for, settled
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import Unavailable
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.servers.common.failure_log import reason_code, task_failure_reason
from trace_platform.servers.common.logs import JsonFormatter
from trace_platform.workers.operators import BUILTIN_OPERATORS
from trace_platform.workers.runtime import OperatorContext, OperatorResult

pytestmark = pytest.mark.integration
SECRET_TEXT = "SELECT secret_column FROM hidden_table"  # in error messages; never in a log line
op_log = logging.getLogger("tests.chatty_operator")


class JsonLines:
    """The platform's own JSON log lines (the formatter production uses), at INFO."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.startswith("{")]

    def loud(self, **match: Any) -> list[dict[str, Any]]:
        """WARNING and above whose fields include ``match``."""
        return [
            e
            for e in self.entries()
            if e["level"] in ("warning", "error", "critical") and all(e.get(k) == v for k, v in match.items())
        ]


@pytest.fixture
def logs() -> Iterator[JsonLines]:
    captured = JsonLines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured.handler)
    root.setLevel(logging.INFO)
    yield captured
    root.removeHandler(captured.handler)
    root.setLevel(level)
    assert SECRET_TEXT not in captured.stream.getvalue()
    assert "secret_column" not in captured.stream.getvalue()


async def chatty(ctx: OperatorContext) -> OperatorResult:
    """Logs from the operator and from a task it starts, then fails with a platform error."""
    op_log.info("chatty working")

    async def helper() -> None:
        op_log.info("chatty helper")

    await asyncio.create_task(helper())
    raise Unavailable("UPSTREAM_DOWN", f"upstream refused: {SECRET_TEXT}", category="rpc")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_alert_settings(settings)


@pytest.fixture
async def working(settings: Settings, logs: JsonLines) -> AsyncIterator[RunningPlatform]:
    operators = {**BUILTIN_OPERATORS, "chatty": chatty}
    running = await start_platform(settings, migrate=False, run_worker=True, operators=operators)
    yield running
    await running.stop(grace=0.5)


async def _terminal(client: DispatcherClient, task_id: str) -> dispatcher_pb2.GetTaskResponse:
    async def done() -> dispatcher_pb2.GetTaskResponse | None:
        got = await client.get_task(task_id)
        return got if got.terminal else None

    result: dispatcher_pb2.GetTaskResponse = await eventually(done, timeout=60, interval=0.1)
    return result


async def test_each_failed_attempt_and_each_task_failed_for_good_is_one_line(
    working: RunningPlatform, settings: Settings, logs: JsonLines
) -> None:
    async with grpc.aio.insecure_channel(working.addr) as ch:
        client = DispatcherClient(ch, admin_token=settings.admin_token)
        specs = [
            dispatcher_pb2.TaskSpec(
                org_id=ORG, operator="fail", config_json=json.dumps({"message": SECRET_TEXT}), max_attempts=3
            )
            for _ in range(6)
        ]
        specs.append(dispatcher_pb2.TaskSpec(org_id=ORG, operator="chatty", config_json="{}", max_attempts=2))
        ids = await client.create_tasks(specs)
        for task_id in ids:
            assert (await _terminal(client, task_id)).task.status == common_pb2.TASK_STATUS_FAILED
    await asyncio.sleep(0.2)  # let the last lines be written

    for task_id in ids[:6]:
        lines = logs.loud(task_id=task_id)
        assert [(e["msg"], e["attempt"], e["level"]) for e in lines] == [
            ("task attempt failed; retry scheduled", 1, "warning"),
            ("task attempt failed; retry scheduled", 2, "warning"),
            ("task failed for good", 3, "error"),
        ], lines
        assert all(
            (e["reason"], e["category"], e["operator"]) == ("OPERATOR_RUNTIME_ERROR", "task", "fail") for e in lines
        )

    chatty_id = ids[6]
    lines = logs.loud(task_id=chatty_id)
    assert [(e["msg"], e["attempt"], e["reason"], e["category"]) for e in lines] == [
        ("task attempt failed; retry scheduled", 1, "UPSTREAM_DOWN", "rpc"),
        ("task failed for good", 2, "UPSTREAM_DOWN", "rpc"),
    ]
    # Every line the operator logged (and the task it started) names its task and attempt.
    own = [e for e in logs.entries() if e["logger"] == "tests.chatty_operator"]
    assert sorted((e["msg"], e.get("task_id"), e.get("attempt")) for e in own) == sorted(
        (msg, chatty_id, attempt) for msg in ("chatty working", "chatty helper") for attempt in (1, 2)
    )
    # Lines outside any task do not pretend to belong to one.
    assert all("task_id" not in e for e in logs.entries() if e["msg"] == "grpc server started")


@pytest.mark.dispatcher_settings(lease_seconds=0.5)
async def test_a_lease_that_runs_out_is_one_line_with_its_reason(
    logs: JsonLines, platform: RunningPlatform, settings: Settings
) -> None:
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, _ = await claim_new(client, operator="noop", max_attempts=1)  # claimed, never heartbeated
        assert (await _terminal(client, ref.task_id)).task.status == common_pb2.TASK_STATUS_FAILED
    await asyncio.sleep(0.2)
    lines = logs.loud(task_id=ref.task_id)
    assert [(e["msg"], e["attempt"], e["reason"], e["category"]) for e in lines] == [
        ("task failed for good", 1, "LEASE_EXPIRED", "lease")
    ]


@pytest.mark.dispatcher_settings(
    default_max_attempts=2, planner_interval_seconds=0.05, head_observer_interval_seconds=0.1
)
async def test_a_chain_sync_range_that_fails_for_good_is_one_line_naming_the_range(
    settings: Settings, logs: JsonLines, db: asyncpg.Connection
) -> None:
    node = AnvilNode.start()
    pools = replace(settings, rpc_pools={"local": node.url})
    yaml = (
        "kind: chain_sync\nname: doomed\nchain_id: 31337\n"
        "mode:\n  kind: fixed_target\n  from_block: 0\n  to_block: 10\n"
        "streams:\n  blocks:\n    cryo_dataset_name: blocks\n    rpc_pool: local\n"
        "    chunk_size: 10\n    max_inflight: 1\n"
    )
    try:
        node.mine(20)
        planning = await start_platform(pools, migrate=False)  # no worker: the range stays queued
        try:
            async with grpc.aio.insecure_channel(planning.addr) as ch:
                assert settings.admin_token
                await ChainSyncClient(ch, admin_token=settings.admin_token).apply(ORG, yaml)

            async def planned() -> Any:
                return await db.fetchrow("SELECT id FROM tasks WHERE operator = 'cryo_ingest'")

            task = await eventually(planned, timeout=30, interval=0.1)
        finally:
            await planning.stop(grace=0.5)
    finally:
        node.stop()  # the pool's node is gone: every attempt at the range fails
    running = await start_platform(pools, migrate=False, run_worker=True)
    try:

        async def failed_for_good() -> bool:
            row = await db.fetchrow("SELECT status, next_retry_at FROM tasks WHERE id = $1", task["id"])
            return bool(row["status"] == "failed" and row["next_retry_at"] is None)

        await eventually(failed_for_good, timeout=120, interval=0.2)
        await asyncio.sleep(0.3)
    finally:
        await running.stop(grace=0.5)
    lines = logs.loud(task_id=str(task["id"]))
    assert [(e["msg"], e["attempt"], e["level"]) for e in lines] == [
        ("task attempt failed; retry scheduled", 1, "warning"),
        ("chain_sync range failed for good", 2, "error"),
    ], lines
    final = lines[-1]
    assert (final["sync"], final["datasets"], final["range_start"], final["range_end"]) == ("doomed", "blocks", 0, 10)
    assert final["category"] == "rpc" and final["reason"].startswith("CRYO_") and final["operator"] == "cryo_ingest"


async def test_a_dead_lettered_batch_and_a_delivery_that_gives_up_are_one_line_each(
    logs: JsonLines, platform: RunningPlatform, settings: Settings, db: asyncpg.Connection
) -> None:
    async with grpc.aio.insecure_channel(platform.addr) as ch:
        client = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        with webhook_receiver(always_status=503) as receiver:
            definition = await AlertRepository(platform.pool).create_definition(ORG, "down", [receiver.url("/h")])
            rows: list[Any] = rows_for(definition, 2)
            ref, cap = await claim_new(client)
            bad_id, _, _ = await publish(
                client, ref, cap, jsonl([rows[0], {**rows[1], "unexpected": True}]), "bad.jsonl"
            )
            good_id, _, _ = await publish(client, ref, cap, jsonl(rows[:1]), "good.jsonl")
            await eventually(lambda: settled(db, bad_id, good_id))
            assert await publish_status(db, bad_id) == "dead_lettered"

            async def given_up() -> Any:
                return await db.fetchrow("SELECT id, attempt FROM alert_deliveries WHERE status = 'failed'")

            delivery = await eventually(given_up, timeout=30)
            await asyncio.sleep(0.3)
    dead = logs.loud(publish_id=bad_id)
    assert [(e["msg"], e["reason"], e["row_number"], e["task_id"]) for e in dead] == [
        ("batch dead-lettered", "UNKNOWN_FIELD", 2, ref.task_id)
    ]
    assert logs.loud(publish_id=good_id) == []
    gave_up = logs.loud(delivery_id=str(delivery["id"]))
    assert [(e["msg"], e["attempt"], e["reason"], e["http_status"]) for e in gave_up] == [
        ("delivery gave up", 3, "HTTP_503", 503)
    ]
    assert gave_up[0]["host"] == "127.0.0.1" and "url" not in gave_up[0]


def test_reason_codes_are_stable() -> None:
    assert task_failure_reason("rpc/CRYO_FAILED: cryo failed") == ("rpc", "CRYO_FAILED")
    assert task_failure_reason("lease expired") == ("lease", "LEASE_EXPIRED")
    assert task_failure_reason(f"ValueError: {SECRET_TEXT}") == ("task", "OPERATOR_VALUE_ERROR")
    assert task_failure_reason(SECRET_TEXT) == ("task", "TASK_FAILED")
    assert [reason_code(t) for t in ("HTTP 503", "timeout", "ClientConnectorError", "DESTINATION_FORBIDDEN")] == [
        "HTTP_503",
        "TIMEOUT",
        "CLIENT_CONNECTOR_ERROR",
        "DESTINATION_FORBIDDEN",
    ]
