"""Transport security of the cluster profile (issue 12, item 4): TLS on every listener,
mutual TLS between platform services as an option, plaintext refused off loopback;
real servers, real processes, real certificates from a throwaway CA."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.anvil import free_port
from tests.conftest import eventually
from tests.e2e.conftest import all_output, spawn, trace_env
from tests.integration.conftest import ORG
from tests.processes import serve
from tests.tls_certs import Pki, make_ca
from trace_platform.adapters.invoker.bridge import TaskEndpointBridge, task_endpoint_tls
from trace_platform.clients.channel import ClientTls, open_channel
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings, TlsSettings
from trace_platform.core.errors import FailedPrecondition
from trace_platform.roles.host import host_roles


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_ca(tmp_path / "pki")


def server_tls(pki: Pki, *, mutual: bool) -> TlsSettings:
    return TlsSettings(
        cert_file=pki.server.cert,
        key_file=pki.server.key,
        client_ca_file=pki.ca if mutual else None,
    )


async def healthy(channel: grpc.aio.Channel) -> bool:
    resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


async def test_a_tls_listener_serves_tls_only(settings: Settings, pki: Pki) -> None:
    running = await host_roles(replace(settings, tls=server_tls(pki, mutual=False)), ["sink"])
    try:
        async with open_channel(running.addr, ClientTls(ca_file=pki.ca)) as channel:
            assert await healthy(channel)
        async with open_channel(running.addr) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await healthy(plaintext)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # A client that trusts another CA refuses the server.
        other = make_ca(pki.ca.parent / "other", "another-ca")
        async with open_channel(running.addr, ClientTls(ca_file=other.ca)) as untrusted:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await healthy(untrusted)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


async def test_mutual_tls_requires_a_client_certificate_of_the_ca(settings: Settings, pki: Pki) -> None:
    running = await host_roles(replace(settings, tls=server_tls(pki, mutual=True)), ["sink"])
    try:
        async with open_channel(running.addr, ClientTls(ca_file=pki.ca)) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError):
                await healthy(anonymous)
        other = make_ca(pki.ca.parent / "other", "another-ca")
        foreign = ClientTls(ca_file=pki.ca, cert_file=other.client.cert, key_file=other.client.key)
        async with open_channel(running.addr, foreign) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await healthy(channel)
        member = ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
        async with open_channel(running.addr, member) as channel:
            assert await healthy(channel)
    finally:
        await running.stop()


async def test_plaintext_off_loopback_is_refused_unless_allowed(settings: Settings) -> None:
    wide = replace(settings, listen="0.0.0.0:0")
    with pytest.raises(FailedPrecondition) as err:
        await host_roles(wide, ["sink"])
    assert err.value.reason == "TLS_REQUIRED"
    running = await host_roles(replace(wide, tls=TlsSettings(allow_plaintext=True)), ["sink"])
    await running.stop()


def tls_env(pki: Pki) -> dict[str, str]:
    """Every platform process: serves with the server certificate, requires client
    certificates, and dials the others with its own."""
    return {
        "TRACE_TLS_CERT_FILE": str(pki.server.cert),
        "TRACE_TLS_KEY_FILE": str(pki.server.key),
        "TRACE_TLS_CLIENT_CA_FILE": str(pki.ca),
        "TRACE_TLS_CA_FILE": str(pki.ca),
        "TRACE_TLS_CLIENT_CERT_FILE": str(pki.client.cert),
        "TRACE_TLS_CLIENT_KEY_FILE": str(pki.client.key),
    }


async def test_a_worker_process_runs_a_task_from_a_dispatcher_process_over_mutual_tls(
    settings: Settings, db: asyncpg.Connection, procs: list[subprocess.Popen[str]], pki: Pki
) -> None:
    _, dispatcher = serve(procs, settings, ["dispatcher", "query"], **tls_env(pki))
    serve(
        procs,
        settings,
        ["worker"],
        TRACE_DISPATCHER_ADDR=dispatcher,
        TRACE_QUERY_ADDR=dispatcher,
        TRACE_WORKER_ID="tls-worker",
        **tls_env(pki),
    )
    member = ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    async with open_channel(dispatcher, member) as channel:
        task_id = await DispatcherClient(channel, admin_token=settings.admin_token).create_task(ORG, "noop", {})

    async def completed() -> bool:
        return bool(await db.fetchval("SELECT status = 'completed' FROM tasks WHERE id = $1", uuid.UUID(task_id)))

    await eventually(completed, timeout=30)
    assert (
        await db.fetchval("SELECT worker_id FROM task_attempts WHERE task_id = $1", uuid.UUID(task_id)) == "tls-worker"
    )


def test_a_half_configured_tls_stops_the_process_naming_the_variable(settings: Settings, pki: Pki) -> None:
    proc = spawn(
        ["serve", "sink", "--listen", "127.0.0.1:0"], trace_env(settings, TRACE_TLS_CERT_FILE=str(pki.server.cert))
    )
    assert proc.wait(timeout=60) == 2
    err = "\n".join(all_output(proc))
    assert "TRACE_TLS_KEY_FILE" in err and "Traceback" not in err


async def test_the_udf_bridge_carries_plaintext_grpc_inside_tls_to_the_task_endpoint(
    settings: Settings, pki: Pki, tmp_path: Path
) -> None:
    """A sandboxed UDF speaks plaintext gRPC to its unix socket; the bridge dials the TLS
    task endpoint with the invoker's client certificate."""
    running = await host_roles(replace(settings, tls=server_tls(pki, mutual=True)), ["sink"])
    bridge = TaskEndpointBridge(
        tmp_path / "task.sock", running.addr, tls=task_endpoint_tls(pki.ca, pki.client.cert, pki.client.key)
    )
    await bridge.start()
    try:
        async with grpc.aio.insecure_channel(bridge.target) as udf_channel:
            assert await healthy(udf_channel)
    finally:
        await bridge.close()
        await running.stop()


async def test_a_plaintext_health_listener_answers_probes_beside_a_tls_one(settings: Settings, pki: Pki) -> None:
    health_port = free_port()
    tls_settings = replace(settings, tls=server_tls(pki, mutual=True), health_listen=f"127.0.0.1:{health_port}")
    running = await host_roles(tls_settings, ["sink"])
    probe = f"127.0.0.1:{health_port}"
    try:
        async with open_channel(probe) as channel:
            assert await healthy(channel)
            # It serves health only: the sink's own service is not there.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary("/trace.v1.SinkService/ListDeadLetters")(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await running.stop()
    # Stopping says NOT_SERVING first, then both listeners close.
    async with open_channel(probe) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await healthy(channel)


async def test_the_cli_and_the_sdk_speak_tls_from_the_environment(
    settings: Settings, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    import trace_platform
    from tests.api_support import make_user

    running = await host_roles(replace(settings, tls=server_tls(pki, mutual=False)), ["api"])
    try:
        user = await make_user(running.pool, settings, "viewer")
        env = {k: v for k, v in trace_env(settings).items() if not k.startswith("TRACE_TLS")}
        env.update(TRACE_USER_TOKEN=user.token, TRACE_ADDR=running.addr)
        cmd = [sys.executable, "-m", "trace_platform", "alerts", "list", "--json"]
        plain = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
        assert plain.returncode == 1 and "UNAVAILABLE" in plain.stderr
        env["TRACE_TLS_CA_FILE"] = str(pki.ca)
        tls = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
        assert tls.returncode == 0, tls.stderr
        monkeypatch.setenv("TRACE_TLS_CA_FILE", str(pki.ca))
        async with await trace_platform.aconnect(running.addr, token=user.token) as client:
            assert (await client.alerts.list()).items == []
    finally:
        await running.stop()


async def test_hs256_user_tokens_are_refused_off_loopback(settings: Settings, pki: Pki) -> None:
    """HS256 user tokens are Lite's: a role serving users anywhere but loopback must verify
    the identity provider's ES256/RS256 keys; one serving no user may keep its settings."""
    wide = replace(settings, listen="0.0.0.0:0", tls=server_tls(pki, mutual=False))
    assert wide.user_auth.hs256_secret
    for roles in (["api"], ["query"]):
        with pytest.raises(FailedPrecondition) as err:
            await host_roles(wide, roles)
        assert err.value.reason == "USER_HS256_NOT_ALLOWED"
    running = await host_roles(wide, ["sink"])
    await running.stop()
