"""A sync that never strands (issue 15, item 3), against real anvil, real Cryo and real
PostgreSQL: a fixed target beyond the head waits for the chain and then finishes; a range
that failed for good is shown with its reason code, retried by resume, and its error is
gone once it is published; two jobs with the same stream names are two datasets; an
unknown RPC pool is refused at apply; status says "synced to" apart from "planned to"."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG, user_client
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.cli.chain_sync import render_status
from trace_platform.clients.chain_sync import ChainSyncClient, pb
from trace_platform.clients.errors import reason_of
from trace_platform.core.chain_sync import derive_dataset_uuid
from trace_platform.core.config import Settings
from trace_platform.core.errors import AlreadyExists, InvalidArgument
from trace_platform.core.metadata import ADMIN_TOKEN
from trace_platform.gen.trace.v1 import chain_sync_pb2_grpc
from trace_platform.lite.chain_demo import DEMO_POOL, demo_yaml
from trace_platform.servers.common.server import ServiceBinding, start_server

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "chain_sync.local_anvil.yaml"
REASON = re.compile(r"^[a-z]+/[A-Z_]+$")


def job_yaml(name: str, from_block: int, to_block: int, chunk: int = 10, keys: tuple[str, ...] = ("blocks",)) -> str:
    streams = "".join(
        f"  {k}:\n    cryo_dataset_name: {k}\n    rpc_pool: local\n    chunk_size: {chunk}\n    max_inflight: 2\n"
        for k in keys
    )
    return (
        f"kind: chain_sync\nname: {name}\nchain_id: 31337\n"
        f"mode:\n  kind: fixed_target\n  from_block: {from_block}\n  to_block: {to_block}\n"
        f"streams:\n{streams}"
    )


class BreakableProxy:
    """A JSON-RPC proxy in front of anvil. While ``fail_below`` is set, a request for a
    block below it answers HTTP 503 (with the upstream URL in the body, which must never
    reach the status); head requests (eth_chainId, eth_blockNumber) always pass."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.fail_below: int | None = None
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if proxy._refuses(json.loads(body)):
                    proxy.refused += 1
                    self._answer(503, f"upstream {proxy.upstream} unavailable".encode())
                    return
                req = urllib.request.Request(proxy.upstream, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as resp:
                    self._answer(resp.status, resp.read())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        # A path the node never sees, standing in for an API key in a provider URL.
        return f"http://127.0.0.1:{self.server.server_address[1]}/secret-key-do-not-show"

    def _refuses(self, doc: Any) -> bool:
        limit = self.fail_below
        if limit is None:
            return False
        for call in doc if isinstance(doc, list) else [doc]:
            params = call.get("params") or []
            first = str(params[0]) if params else ""
            if call.get("method") == "eth_getBlockByNumber" and first.startswith("0x") and int(first, 16) < limit:
                return True
        return False

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Synced:
    node: AnvilNode
    running: RunningPlatform
    admin: ChainSyncClient
    channel: grpc.aio.Channel


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    node = AnvilNode.start()
    try:
        yield node
    finally:
        node.stop()


async def _start(settings: Settings, pools: dict[str, str], max_attempts: int = 3) -> RunningPlatform:
    fast = replace(
        settings,
        rpc_pools=pools,
        dispatcher=replace(
            settings.dispatcher,
            planner_interval_seconds=0.05,
            head_observer_interval_seconds=0.2,
            default_max_attempts=max_attempts,
        ),
    )
    return await start_platform(fast, migrate=False, run_worker=True)


@pytest.fixture
async def synced(settings: Settings, node: AnvilNode) -> AsyncIterator[Synced]:
    running = await _start(settings, {"local": node.url, DEMO_POOL: node.url})
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            yield Synced(node, running, ChainSyncClient(ch, admin_token=settings.admin_token), ch)
    finally:
        await running.stop(grace=0.5)


async def _job(admin: ChainSyncClient, name: str) -> pb.ChainSyncStatus:
    jobs = await admin.status(ORG, name)
    assert len(jobs) == 1
    return jobs[0]


async def _completed(admin: ChainSyncClient, name: str, timeout: float = 90) -> pb.ChainSyncStatus:
    async def done() -> pb.ChainSyncStatus | None:
        job = await _job(admin, name)
        return job if job.completed else None

    status: pb.ChainSyncStatus = await eventually(done, timeout=timeout, interval=0.2)
    return status


async def _block_numbers(ch: grpc.aio.Channel, settings: Settings, dataset: str) -> list[int]:
    rows = await (await user_client(ch, settings)).query(
        dataset, "SELECT block_number FROM dataset ORDER BY block_number", limit=10_000
    )
    return [int(r[0]) for r in rows.rows]


async def _ledger_spans(db: asyncpg.Connection, name: str, key: str = "blocks") -> list[tuple[int, int, str]]:
    rows = await db.fetch(
        "SELECT r.range_start, r.range_end, r.status FROM chain_sync_ranges r JOIN chain_sync_jobs j ON j.id = r.job_id"
        " WHERE j.name = $1 AND r.dataset_key = $2 ORDER BY r.range_start",
        name,
        key,
    )
    return [(int(r["range_start"]), int(r["range_end"]), r["status"]) for r in rows]


# --- 1. a fixed target beyond the head waits for the chain -----------------------------


async def test_fixed_target_beyond_the_head_waits_and_finishes_once_the_chain_gets_there(
    synced: Synced, settings: Settings, db: asyncpg.Connection
) -> None:
    synced.node.mine(12)
    head = synced.node.block_number()  # blocks 0..head exist
    target = 45
    assert head + 1 < target
    await synced.admin.apply(ORG, job_yaml("ahead", 0, target, chunk=8))

    async def synced_to_head() -> pb.ChainSyncStatus | None:
        job = await _job(synced.admin, "ahead")
        s = job.streams[0]
        return job if s.synced_to == head + 1 and s.in_flight == 0 else None

    waiting = await eventually(synced_to_head, timeout=60, interval=0.2)
    stream = waiting.streams[0]
    # Planned only up to the observed head: nothing was handed to Cryo beyond the chain.
    assert (stream.planned_to, stream.synced_to, waiting.synced_to) == (head + 1, head + 1, head + 1)
    await asyncio.sleep(1.5)  # and it stays waiting: not complete, nothing failed
    still = await _job(synced.admin, "ahead")
    assert not still.completed and still.streams[0].planned_to == head + 1
    assert still.streams[0].last_error == "" and not still.streams[0].failed_ranges
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE status <> 'completed'") == 0
    assert "synced to" in render_status([still]) and "planned to" in render_status([still])

    synced.node.mine(target + 5 - synced.node.block_number())
    done = await _completed(synced.admin, "ahead")
    assert (done.streams[0].synced_to, done.streams[0].planned_to, done.synced_to) == (target, target, target)
    assert await _block_numbers(synced.channel, settings, "ahead.blocks") == list(range(target))  # exactly once
    spans = await _ledger_spans(db, "ahead")
    assert spans[0][0] == 0 and spans[-1][1] == target
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)) and {s[2] for s in spans} == {"completed"}
    # No range ever failed on the way: every task succeeded on its first attempt.
    assert await db.fetchval("SELECT max(attempt) FROM tasks") == 1


# --- 2. failed for good: shown with its reason, retried by resume, then gone -----------


async def test_a_range_failed_for_good_is_shown_retried_by_resume_and_not_shown_once_published(
    settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    node.mine(30)
    proxy = BreakableProxy(node.url)
    proxy.fail_below = 10  # [0, 10) cannot be extracted; [10, 20) can
    running = await _start(settings, {"local": proxy.url}, max_attempts=1)  # the first failure is for good
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            await admin.apply(ORG, job_yaml("flaky", 0, 20, chunk=10))

            async def stuck() -> pb.ChainSyncStatus | None:
                job = await _job(admin, "flaky")
                s = job.streams[0]
                return job if s.failed_ranges and s.completed_ranges == 1 else None

            job = await eventually(stuck, timeout=60, interval=0.2)
            stream = job.streams[0]
            [failed] = stream.failed_ranges
            assert (failed.range_start, failed.range_end, failed.attempts) == (0, 10, 1)
            assert REASON.fullmatch(failed.reason) and failed.reason.startswith("rpc/"), failed.reason
            assert stream.last_error == failed.reason and stream.last_error_category == "rpc"
            # Block 10..19 is published, but nothing is synced until [0, 10) is.
            assert (stream.synced_to, stream.planned_to, stream.completed_blocks) == (0, 20, 10)
            assert not job.completed and proxy.refused > 0
            shown = render_status([job]) + str(job)
            assert "failed [0, 10) rpc/" in shown and "trace resume flaky" in shown
            assert "secret-key" not in shown and str(proxy.server.server_address[1]) not in shown  # no URL

            await asyncio.sleep(1.0)  # for good: no automatic retry while the job waits
            assert (await _job(admin, "flaky")).streams[0].failed_ranges[0].attempts == 1

            proxy.fail_below = None  # the node recovers; resume retries the range
            await admin.pause(ORG, "flaky")
            await admin.resume(ORG, "flaky")
            done = await _completed(admin, "flaky")
            stream = done.streams[0]
            # The error no longer holds: not shown once its range is published.
            assert (stream.last_error, stream.last_error_category, list(stream.failed_ranges)) == ("", "", [])
            assert (stream.synced_to, stream.planned_to, stream.completed_blocks) == (20, 20, 20)
            assert "last error" not in render_status([done]) and "failed [" not in render_status([done])
            assert await _block_numbers(ch, settings, "flaky.blocks") == list(range(20))
    finally:
        await running.stop(grace=0.5)
        proxy.stop()
    retried = await db.fetchrow(
        "SELECT t.attempt, t.status FROM tasks t JOIN chain_sync_ranges r ON r.task_id = t.id WHERE r.range_start = 0"
    )
    assert (retried["attempt"], retried["status"]) == (2, "completed")


# --- 3. same stream names, two jobs: two datasets ---------------------------------------


async def test_two_jobs_with_the_same_stream_names_sync_and_query_independently(
    synced: Synced, settings: Settings, db: asyncpg.Connection
) -> None:
    emitter = synced.node.deploy_log_emitter()
    for _ in range(3):
        synced.node.send(to=emitter, gas=hex(100_000))
    synced.node.mine(45 - synced.node.block_number())
    keys = ("blocks", "transactions")
    alpha = await synced.admin.apply(ORG, job_yaml("alpha", 0, 20, chunk=10, keys=keys))
    beta = await synced.admin.apply(ORG, job_yaml("beta", 10, 40, chunk=15, keys=keys))
    assert alpha.outcome == beta.outcome == pb.APPLY_OUTCOME_CREATED and alpha.job_id != beta.job_id
    await _completed(synced.admin, "alpha")
    await _completed(synced.admin, "beta")
    assert await _block_numbers(synced.channel, settings, "alpha.blocks") == list(range(20))
    assert await _block_numbers(synced.channel, settings, "beta.blocks") == list(range(10, 40))
    user = await user_client(synced.channel, settings)
    tx_alpha = await user.query("alpha.transactions", "SELECT count(*) FROM dataset")
    tx_beta = await user.query("beta.transactions", "SELECT count(*) FROM dataset")
    assert tx_alpha.rows == [[4]] and tx_beta.rows == [[0]]  # the 4 transactions are in blocks 1..4

    ids = {
        r["name"]: str(r["id"])
        for r in await db.fetch("SELECT id, name FROM datasets WHERE name LIKE 'alpha.%' OR name LIKE 'beta.%'")
    }
    assert len(set(ids.values())) == 4
    assert ids["alpha.blocks"] == derive_dataset_uuid(ORG, 31337, "alpha", "blocks")
    assert ids["beta.blocks"] == derive_dataset_uuid(ORG, 31337, "beta", "blocks")
    # Re-applying either leaves both as they are.
    again = await synced.admin.apply(ORG, job_yaml("alpha", 0, 20, chunk=10, keys=keys))
    assert again.outcome == pb.APPLY_OUTCOME_UNCHANGED


async def test_the_readme_example_applies_beside_the_demo(synced: Synced, db: asyncpg.Connection) -> None:
    """`make demo` applies the `demo` job (blocks, transactions, logs); the README's example
    has the same stream names on the same chain. Both are accepted, as two sets of datasets."""
    synced.node.mine(5)
    demo = await synced.admin.apply(ORG, demo_yaml(5))
    example = await synced.admin.apply(ORG, EXAMPLE.read_text())
    assert demo.outcome == example.outcome == pb.APPLY_OUTCOME_CREATED
    names = {r["name"]: r["id"] for r in await db.fetch("SELECT id, name FROM datasets")}
    for key in ("blocks", "transactions", "logs"):
        assert names[f"demo.{key}"] != names[f"anvil_bootstrap.{key}"]
    await _completed(synced.admin, "demo")


async def test_a_dataset_identity_held_elsewhere_is_already_exists_and_nothing_is_written(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """A registry row that already holds the UUID a new stream would get (under another
    name) is a unique violation inside apply: ALREADY_EXISTS with a reason, never INTERNAL."""
    held = derive_dataset_uuid(ORG, 31337, "taken", "blocks")
    await db.execute(
        "INSERT INTO datasets (id, org_id, name) VALUES ($1, $2, 'squatter')", uuid.UUID(held), uuid.UUID(ORG)
    )
    running = await start_platform(replace(settings, rpc_pools={"local": "http://127.0.0.1:9"}), migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            with pytest.raises(AlreadyExists) as exc:
                await admin.apply(ORG, job_yaml("taken", 0, 20))
            assert exc.value.reason == "DATASET_ID_TAKEN"
            # Concurrent first applies of one new job: each either applies or conflicts, never INTERNAL.
            results = await asyncio.gather(
                *(admin.apply(ORG, job_yaml("raced", 0, 20)) for _ in range(6)), return_exceptions=True
            )
            for r in results:
                assert not isinstance(r, BaseException) or (
                    isinstance(r, AlreadyExists) and r.reason == "CHAIN_SYNC_APPLY_CONFLICT"
                ), r
    finally:
        await running.stop(grace=0.5)
    assert await db.fetchval("SELECT count(*) FROM chain_sync_jobs WHERE name = 'taken'") == 0
    assert await db.fetchval("SELECT count(*) FROM datasets WHERE name LIKE 'taken.%'") == 0
    assert await db.fetchval("SELECT count(*) FROM chain_sync_jobs WHERE name = 'raced'") == 1


# --- 4. an unknown RPC pool is refused at apply -----------------------------------------


async def _error_info(ch: grpc.aio.Channel, settings: Settings, yaml_text: str) -> error_details_pb2.ErrorInfo:
    stub = chain_sync_pb2_grpc.ChainSyncServiceStub(ch)
    request = pb.ApplyChainSyncRequest(org_id=ORG, yaml=yaml_text)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ApplyChainSync(request, metadata=((ADMIN_TOKEN, settings.admin_token or ""),))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for key, value in exc.value.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            info = error_details_pb2.ErrorInfo()
            assert status_pb2.Status.FromString(value).details[0].Unpack(info)
            return info
    raise AssertionError("no ErrorInfo")


async def test_an_unknown_rpc_pool_is_refused_at_once_and_nothing_is_written(
    settings: Settings, db: asyncpg.Connection
) -> None:
    running = await start_platform(replace(settings, rpc_pools={"local": "http://127.0.0.1:9"}), migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            bad = job_yaml("nopool", 0, 20, keys=("blocks", "logs")).replace(
                "logs\n    rpc_pool: local", "logs\n    rpc_pool: archive"
            )
            with pytest.raises(InvalidArgument) as exc:
                await admin.apply(ORG, bad)
            assert exc.value.reason == "RPC_POOL_UNKNOWN"
            assert "streams.logs.rpc_pool" in exc.value.message and "'archive'" in exc.value.message
            assert "TRACE_RPC_POOL_ARCHIVE_URL" in exc.value.message and "127.0.0.1" not in exc.value.message
            info = await _error_info(ch, settings, bad)  # the ErrorInfo itself names the pool and the field
            assert (info.reason, info.domain) == ("RPC_POOL_UNKNOWN", "trace")
            assert dict(info.metadata) == {"field": "streams.logs.rpc_pool", "rpc_pool": "archive"}
            for table in ("chain_sync_jobs", "chain_sync_streams", "datasets", "tasks"):
                assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0, table

            # An existing job cannot be moved onto an unknown pool either; it stays as it was.
            good = await admin.apply(ORG, job_yaml("moved", 0, 20))
            with pytest.raises(InvalidArgument) as moved:
                await admin.apply(ORG, job_yaml("moved", 0, 20).replace("rpc_pool: local", "rpc_pool: archive"))
            assert moved.value.reason == "RPC_POOL_UNKNOWN"
            assert (await _job(admin, "moved")).yaml_hash == good.yaml_hash
            assert await db.fetchval("SELECT rpc_pool FROM chain_sync_streams") == "local"
    finally:
        await running.stop(grace=0.5)


# --- any unique violation reaching the boundary is a conflict, not INTERNAL ------------


async def test_a_unique_violation_no_repository_translated_is_already_exists(db: asyncpg.Connection) -> None:
    """A real PostgreSQL unique violation raised inside a handler of a real server (built
    as every Trace server is) reaches the caller as ALREADY_EXISTS with a reason code, and
    neither the constraint nor the SQL is in the answer."""
    await db.execute("CREATE TABLE conflict_probe (k int PRIMARY KEY)")
    await db.execute("INSERT INTO conflict_probe VALUES (1)")

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await db.execute("INSERT INTO conflict_probe VALUES (1)")
        return b""

    generic = grpc.method_handlers_generic_handler(
        "trace.test.Probe", {"Insert": grpc.unary_unary_rpc_method_handler(handler)}
    )
    server = await start_server(
        [ServiceBinding("trace.test.Probe", lambda s: s.add_generic_rpc_handlers((generic,)))], "127.0.0.1:0"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            insert = ch.unary_unary("/trace.test.Probe/Insert")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await insert(b"")
    finally:
        await server.stop(0)
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(exc.value) == "ALREADY_EXISTS"
    assert "conflict_probe" not in (exc.value.details() or "") and "INSERT" not in (exc.value.details() or "")
