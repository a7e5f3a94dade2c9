"""The RuntimeInvoker gRPC service on a free port: auth, validation, a real bundle run,
a hostile bundle refused with its reason code, a timeout reported in the response."""

from __future__ import annotations

import secrets
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.bundle_helpers import Member, signed_zip
from tests.udf_fixtures import UdfLab, shared_tmp_dir
from trace_platform.clients.invoker import InvokerClient
from trace_platform.core.bundles import file_sha256
from trace_platform.core.config import InvokerSettings, Settings, UdfLimits
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, PermissionDenied, Unauthenticated
from trace_platform.servers.common.server import GrpcServer, start_server
from trace_platform.servers.invoker.app import RuntimeInvokerApp, build_invoker_app

WORKER_TOKEN = secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def lab() -> Iterator[UdfLab]:
    bundles, runs = shared_tmp_dir("trace-svc-bundles-"), shared_tmp_dir("trace-svc-runs-")
    yield UdfLab(Ed25519PrivateKey.generate(), bundles, runs)
    shutil.rmtree(bundles, ignore_errors=True)
    shutil.rmtree(runs, ignore_errors=True)


@pytest.fixture
async def server(lab: UdfLab, tmp_path: Path) -> AsyncIterator[GrpcServer]:
    keys = tmp_path / "bundle_keys"
    keys.mkdir()
    pem = lab.key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (keys / "lab.pub").write_bytes(pem)
    settings = Settings(
        data_dir=tmp_path,
        worker_token=WORKER_TOKEN,
        invoker=InvokerSettings(
            bundle_roots=(lab.bundles,),
            trusted_keys_dir=keys,
            runs_dir=lab.runs,
            limits=UdfLimits(timeout_seconds=3.0),
        ),
    )
    app: RuntimeInvokerApp = build_invoker_app(settings)
    running = await start_server([app.binding], "127.0.0.1:0")
    yield running
    await running.stop(0.5)
    await app.close()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


def payload(url: str, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task_id": str(uuid.uuid4()),
        "attempt": 1,
        "lease_token": str(uuid.uuid4()),
        "lease_expires_at": datetime.now(UTC) + timedelta(seconds=30),
        "capability_token": "cap-" + uuid.uuid4().hex,
        "bundle_url": url,
    }
    base.update(changes)
    return base


async def test_invoke_runs_bundle_and_health_serves(lab: UdfLab, channel: grpc.aio.Channel) -> None:
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="trace.v1.RuntimeInvokerService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    url = lab.python("def main(event):\n    return {'n': len(event['inputs']['rows']), 'cfg': event['config']}\n")
    sha = file_sha256(Path(url[7:]))
    client = InvokerClient(channel, worker_token=WORKER_TOKEN)
    resp = await client.invoke(
        **payload(url, bundle_sha256=sha, config={"k": "v"}, inputs={"rows": [1, 2]}),  # type: ignore[arg-type]
    )
    assert resp.error_reason == "" and resp.exit_code == 0 and resp.runtime == "python"
    assert resp.result_json == '{"n": 2, "cfg": {"k": "v"}}'


async def test_invoke_requires_the_worker_token(lab: UdfLab, channel: grpc.aio.Channel) -> None:
    url = lab.python("def main(event):\n    return 1\n")
    with pytest.raises(Unauthenticated):
        await InvokerClient(channel).invoke(**payload(url))  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied) as info:
        await InvokerClient(channel, worker_token="wrong").invoke(**payload(url))  # type: ignore[arg-type]
    assert info.value.reason == "CREDENTIAL_INVALID"


async def test_invalid_payload_is_refused(lab: UdfLab, channel: grpc.aio.Channel) -> None:
    client = InvokerClient(channel, worker_token=WORKER_TOKEN)
    url = lab.python("def main(event):\n    return 1\n")
    cases = {
        "INVALID_UUID": payload(url, task_id="not-a-uuid"),
        "INVALID_ATTEMPT": payload(url, attempt=0),
        "MISSING_FIELD": payload(url, capability_token=""),
        "INVALID_SHA256": payload(url, bundle_sha256="abc"),
    }
    for reason, p in cases.items():
        with pytest.raises(InvalidArgument) as info:
            await client.invoke(**p)  # type: ignore[arg-type]
        assert info.value.reason == reason
    with pytest.raises(FailedPrecondition) as expired:
        await client.invoke(**payload(url, lease_expires_at=datetime.now(UTC) - timedelta(seconds=5)))  # type: ignore[arg-type]
    assert expired.value.reason == "LEASE_EXPIRED"


async def test_hostile_bundle_is_a_failed_precondition_with_reason(lab: UdfLab, channel: grpc.aio.Channel) -> None:
    path = lab.bundles / f"{uuid.uuid4().hex}.zip"
    signed_zip(
        path,
        lab.key,
        "python",
        "handler.main",
        {"handler.py": b"def main(e):\n    return 1\n"},
        extra=[Member("../../etc/cron.d/evil", b"* * * * * root id\n")],
    )
    with pytest.raises(FailedPrecondition) as info:
        await InvokerClient(channel, worker_token=WORKER_TOKEN).invoke(**payload(f"file://{path}"))  # type: ignore[arg-type]
    assert info.value.reason == "BUNDLE_PATH_TRAVERSAL"


async def test_timeout_is_reported_in_the_response(lab: UdfLab, channel: grpc.aio.Channel) -> None:
    url = lab.python("def main(event):\n    while True:\n        pass\n")
    resp = await InvokerClient(channel, worker_token=WORKER_TOKEN).invoke(**payload(url))  # type: ignore[arg-type]
    assert resp.timed_out and resp.error_reason == "UDF_TIMEOUT" and resp.result_json == ""
    assert 2500 <= resp.duration_ms < 8000
