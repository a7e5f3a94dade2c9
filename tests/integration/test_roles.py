"""Each role on its own (issue 12, item 1): `trace serve ROLE` serves only that role's
services plus health and reflection; what Lite wires in memory works across processes
(task tokens verified with the Dispatcher's JWKS over gRPC, a worker in its own process,
planner wake-ups through NOTIFY); a start-up that fails part way closes what it opened.

Roles alone are started in process through the same host `trace serve` uses (real
servers on free ports, real PostgreSQL); the cross-process cases run `trace serve` in
real subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.anvil import free_port
from tests.conftest import eventually
from tests.datasets import FIXTURE_ROWS, write_dataset
from tests.e2e.conftest import all_output, spawn, trace_env, wait_for_line
from tests.integration.conftest import ORG, claim_with_grants
from tests.processes import serve
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.postgres.wakeups import PostgresWakeups
from trace_platform.cli.serve import ROLE_NAMES
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import EndpointSettings, Settings
from trace_platform.core.errors import FailedPrecondition, Unauthenticated
from trace_platform.core.keys import KeyRing, SigningKey
from trace_platform.core.tokens import CapabilityClaims, TokenIssuer
from trace_platform.gen.trace.api.v1 import alerts_pb2 as api_alerts_pb2
from trace_platform.gen.trace.api.v1 import bundles_pb2 as api_bundles_pb2
from trace_platform.gen.trace.api.v1 import dags_pb2 as api_dags_pb2
from trace_platform.gen.trace.api.v1 import datasets_pb2 as api_datasets_pb2
from trace_platform.gen.trace.api.v1 import query_pb2 as api_query_pb2
from trace_platform.gen.trace.v1 import (
    chain_sync_pb2,
    dispatcher_pb2,
    invoker_pb2,
    query_pb2,
    sink_pb2,
)
from trace_platform.roles.host import ROLES, host_roles

HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SERVICES = {
    "dispatcher": {
        dispatcher_pb2.DESCRIPTOR.services_by_name["DispatcherService"],
        chain_sync_pb2.DESCRIPTOR.services_by_name["ChainSyncService"],
    },
    "query": {
        query_pb2.DESCRIPTOR.services_by_name["QueryService"],  # TaskQuery (internal)
        api_query_pb2.DESCRIPTOR.services_by_name["QueryService"],  # Query, QueryArrow (public)
    },
    "invoker": {invoker_pb2.DESCRIPTOR.services_by_name["RuntimeInvokerService"]},
    "sink": {sink_pb2.DESCRIPTOR.services_by_name["SinkService"]},
    "delivery": set(),
    # The public API (trace.api.v1); its user queries are the query role's.
    "api": {
        api_datasets_pb2.DESCRIPTOR.services_by_name["DatasetService"],
        api_dags_pb2.DESCRIPTOR.services_by_name["DagService"],
        api_bundles_pb2.DESCRIPTOR.services_by_name["BundleService"],
        api_alerts_pb2.DESCRIPTOR.services_by_name["AlertService"],
    },
    "worker": set(),
}
EVERY_SERVICE = {s for services in SERVICES.values() for s in services}


def test_the_cli_lists_every_role_the_host_knows() -> None:
    # cli/serve.py names the roles without importing the servers; they must not drift apart.
    assert tuple(ROLES) == ROLE_NAMES == tuple(SERVICES)


def alone(settings: Settings) -> Settings:
    """Settings for one role in its own process: the others are elsewhere. Nothing
    listens at those addresses; a role must not need them to start."""
    nowhere = f"127.0.0.1:{free_port()}"
    return replace(settings, endpoints=EndpointSettings(dispatcher=nowhere, query=nowhere, invoker=nowhere))


async def list_services(channel: grpc.aio.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names: set[str] = set()
    async for response in call:
        names |= {s.name for s in response.list_services_response.service}
    return names


@pytest.mark.parametrize("role", list(SERVICES))
async def test_a_role_alone_serves_only_its_own_services_with_health_and_reflection(
    settings: Settings, role: str
) -> None:
    running = await host_roles(alone(settings), [role])
    try:
        async with grpc.aio.insecure_channel(running.addr) as channel:
            own = {s.full_name for s in SERVICES[role]}
            assert await list_services(channel) == {*own, HEALTH, REFLECTION}
            health = health_pb2_grpc.HealthStub(channel)
            for name in ["", *own]:
                status = (await health.Check(health_pb2.HealthCheckRequest(service=name))).status
                assert status == health_pb2.HealthCheckResponse.SERVING, name
            # Every other role's service is absent here, method by method's first.
            for service in EVERY_SERVICE - SERVICES[role]:
                method = f"/{service.full_name}/{service.methods[0].name}"
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await channel.unary_unary(method)(b"", timeout=10)
                assert exc.value.code() == grpc.StatusCode.UNIMPLEMENTED, method
    finally:
        await running.stop()


@pytest.fixture
async def dispatcher_proc(settings: Settings, procs: list[subprocess.Popen[str]]) -> AsyncIterator[str]:
    """`trace serve dispatcher` in its own process; its address."""
    _, addr = serve(procs, settings, ["dispatcher"])
    yield addr


async def test_a_query_role_verifies_a_token_minted_by_a_dispatcher_in_another_process(
    settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[str]], dispatcher_proc: str
) -> None:
    # The query process gets a key directory of its own: were it to use a local key ring
    # instead of the Dispatcher's JWKS, it would make its own keys and refuse the token.
    _, query_addr = serve(
        procs,
        settings,
        ["query"],
        TRACE_DISPATCHER_ADDR=dispatcher_proc,
        TRACE_TOKEN_KEY_DIR=str(tmp_path / "query-keys"),
    )
    assert not (tmp_path / "query-keys").exists()
    store = LocalObjectStore([settings.data_dir / "objects"])
    (settings.data_dir / "objects").mkdir(parents=True, exist_ok=True)
    ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(FIXTURE_ROWS)])
    async with (
        grpc.aio.insecure_channel(dispatcher_proc) as dch,
        grpc.aio.insecure_channel(query_addr) as qch,
    ):
        client = DispatcherClient(dch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_with_grants(client, [ds.grant_pb])
        query = QueryClient(qch)
        sql = "SELECT dedupe_key FROM dataset ORDER BY dedupe_key"
        rows = await query.task_query(cap, ref.task_id, ref.attempt, ds.dataset_uuid, sql)
        assert [r[0] for r in rows.rows] == FIXTURE_ROWS["dedupe_key"]
        # And a token signed by any other key is refused: verification is real.
        foreign = TokenIssuer(settings.tokens.issuer, 300, KeyRing(SigningKey.generate()))
        token = foreign.issue(CapabilityClaims(ORG, ref.task_id, ref.attempt, (ds.grant,), (ds.prefix_uri,)))
        with pytest.raises(Unauthenticated) as exc:
            await query.task_query(token, ref.task_id, ref.attempt, ds.dataset_uuid, sql)
        assert exc.value.reason == "CAPABILITY_TOKEN_UNKNOWN_KEY"
        # The keys are cached: with the Dispatcher gone, a token it signed still verifies.
        dispatcher = next(p for p in procs if "dispatcher" in p.args)
        dispatcher.terminate()
        assert dispatcher.wait(timeout=15) == 0
        rows = await query.task_query(cap, ref.task_id, ref.attempt, ds.dataset_uuid, sql)
        assert [r[0] for r in rows.rows] == FIXTURE_ROWS["dedupe_key"]
    assert not (tmp_path / "query-keys").exists()


async def worker_that_ran_a_task(settings: Settings, db: asyncpg.Connection, dispatcher_addr: str) -> str:
    """Create a noop task on the Dispatcher at ``dispatcher_addr``; once it completed, the
    worker id that ran it."""
    async with grpc.aio.insecure_channel(dispatcher_addr) as channel:
        client = DispatcherClient(channel, admin_token=settings.admin_token)
        task_id = await client.create_task(ORG, "noop", {})

    async def completed() -> bool:
        return bool(await db.fetchval("SELECT status = 'completed' FROM tasks WHERE id = $1", uuid.UUID(task_id)))

    await eventually(completed, timeout=30)
    return str(await db.fetchval("SELECT worker_id FROM task_attempts WHERE task_id = $1", uuid.UUID(task_id)))


async def test_a_worker_role_claims_and_completes_a_task_from_a_dispatcher_in_another_process(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]], dispatcher_proc: str
) -> None:
    serve(
        procs,
        settings,
        ["worker"],
        TRACE_DISPATCHER_ADDR=dispatcher_proc,
        TRACE_QUERY_ADDR=f"127.0.0.1:{free_port()}",
        TRACE_WORKER_ID="alone",
    )
    assert await worker_that_ran_a_task(settings, db, dispatcher_proc) == "alone"


async def test_trace_worker_run_is_the_worker_role_pointed_at_one_address(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]], dispatcher_proc: str
) -> None:
    """`trace worker run --addr` builds nothing of its own: it is the worker role (the same
    root, with its health listener) using ADDR for the Dispatcher and the Query Service."""
    proc = spawn(["worker", "run", "--addr", dispatcher_proc], trace_env(settings, TRACE_WORKER_ID="via-run"))
    procs.append(proc)
    health_addr = wait_for_line(proc, r"worker serving on (\S+)", timeout=60)
    async with grpc.aio.insecure_channel(health_addr) as channel:
        assert await list_services(channel) == {HEALTH, REFLECTION}
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert await worker_that_ran_a_task(settings, db, dispatcher_proc) == "via-run"


async def test_a_role_whose_peer_has_no_address_is_a_usage_error_naming_the_variable(
    settings: Settings, procs: list[subprocess.Popen[str]]
) -> None:
    proc = spawn(["serve", "query", "--listen", "127.0.0.1:0"], trace_env(settings))
    procs.append(proc)
    assert proc.wait(timeout=60) == 2
    err = "\n".join(all_output(proc))
    assert "error: TRACE_DISPATCHER_ADDR: required when the dispatcher role runs in another process" in err
    assert "Traceback" not in err


async def test_a_planner_wake_up_reaches_another_listener_through_notify(settings: Settings) -> None:
    assert settings.database_url
    # Two pools and two listeners: nothing is shared in memory, the wake-up goes through PostgreSQL.
    here = await create_pool(settings.database_url, 1, 2)
    there = await create_pool(settings.database_url, 1, 2)
    sender, receiver = PostgresWakeups(here), PostgresWakeups(there)
    try:
        await receiver.waiter("chain_sync_planner")(0.01)  # listening from now on
        waited = asyncio.create_task(receiver.waiter("chain_sync_planner")(30.0))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        sender.signal("chain_sync_planner")()
        await asyncio.wait_for(waited, 5)
        assert time.monotonic() - started < 2.0
        # Another name does not wake it.
        other = asyncio.create_task(receiver.waiter("chain_sync_planner")(0.5))
        sender.signal("something_else")()
        started = time.monotonic()
        await other
        assert time.monotonic() - started >= 0.4
    finally:
        await sender.close()
        await receiver.close()
        await here.close()
        await there.close()


def port_is_free(port: int) -> bool:
    with socket.socket() as s, contextlib.suppress(OSError):
        s.bind(("127.0.0.1", port))
        return True
    return False


async def connections(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


@pytest.mark.parametrize("failure", ["peer_address_missing", "metrics_port_taken"])
async def test_a_start_up_failing_part_way_closes_what_it_opened(
    settings: Settings, db: asyncpg.Connection, failure: str
) -> None:
    grpc_port = free_port()
    settings = replace(settings, listen=f"127.0.0.1:{grpc_port}", db_pool_min=2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        if failure == "metrics_port_taken":
            # The sink role alone: pool, queue and wake-ups open, then the metrics endpoint fails.
            settings = replace(settings, metrics_listen=f"127.0.0.1:{taken.getsockname()[1]}")
            roles, error = ["sink"], OSError
        else:
            # The query role alone with no Dispatcher address: the port is bound and the
            # pool open when the role's root finds it cannot reach the keys.
            settings = replace(settings, metrics_listen=f"127.0.0.1:{free_port()}")
            roles, error = ["query"], FailedPrecondition  # type: ignore[assignment]
        before = await connections(db)
        with pytest.raises(error):
            await host_roles(settings, roles)
    assert port_is_free(grpc_port), "the gRPC port is still bound"
    metrics_port = int(settings.metrics_listen.rsplit(":", 1)[1])
    if failure == "peer_address_missing":
        assert port_is_free(metrics_port), "the metrics port is still bound"

    async def pool_closed() -> bool:
        return await connections(db) <= before

    await eventually(pool_closed, timeout=5)


def test_lite_does_not_import_the_cli() -> None:
    # Lite composes the roles and shows progress through trace_platform.views; the CLI is
    # one of its callers, never something it depends on.
    probe = (
        "import sys, trace_platform.lite.platform, trace_platform.lite.stack, trace_platform.lite.chain_demo;"
        "print(sorted(m for m in sys.modules if m == 'trace_platform.cli' or m.startswith('trace_platform.cli.')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


async def test_a_wait_cancelled_while_it_starts_listening_leaks_no_connection(settings: Settings) -> None:
    # Loops are cancelled at stop wherever they are, also between taking the listening
    # connection and LISTEN; the connection must go back, or the pool's close hangs.
    assert settings.database_url
    for delay in [i * 0.0005 for i in range(40)]:
        pool = await create_pool(settings.database_url, 1, 2)
        wakeups = PostgresWakeups(pool)
        waiting = asyncio.create_task(wakeups.waiter("x")(10.0))
        await asyncio.sleep(delay)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await wakeups.close()
        await asyncio.wait_for(pool.close(), 5)
