"""BundleService on a real gRPC server against real PostgreSQL (and moto's S3 server):
uploads are checked before anything becomes usable, bundles are immutable and org-scoped,
and what the repository hands out is what the invoker runs."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import asyncpg
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.api_support import ApiUser, make_user
from tests.bundle_helpers import Member, signed_zip, write_zip
from tests.moto_server import moto_server
from tests.udf_fixtures import invocation, shared_tmp_dir
from trace_platform.adapters.invoker.local import LocalInvoker
from trace_platform.adapters.objectstore.bundle_objects import bundle_objects
from trace_platform.adapters.postgres.bundle_repository import BundleRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.clients.api.bundles import BundlesClient, file_digest, put_file
from trace_platform.core.bundle_manifest import MANIFEST_NAME, TrustedKeys
from trace_platform.core.config import BundleSettings, InvokerSettings, ObjectStoreSettings, Settings, UdfLimits
from trace_platform.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TraceError,
)
from trace_platform.gen.trace.api.v1 import bundles_pb2 as pb
from trace_platform.gen.trace.api.v1 import bundles_pb2_grpc
from trace_platform.servers.api.bundles.app import build_bundle_binding
from trace_platform.servers.api.identity import build_user_authenticator
from trace_platform.servers.common.server import start_server

HANDLER = b"def main(event):\n    return {'seen': event['config'].get('x'), 'n': len(event['inputs']['rows'])}\n"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _trust(settings: Settings, key: Ed25519PrivateKey) -> None:
    keys = settings.data_dir / "bundle_keys"
    keys.mkdir(exist_ok=True)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (keys / "trusted.pub").write_bytes(pem)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    assert settings.database_url
    p = await create_pool(settings.database_url, 1, 4)
    yield p
    await p.close()


class Api:
    def __init__(self, channel: grpc.aio.Channel, pool: asyncpg.Pool, settings: Settings, port: int) -> None:
        self.channel, self.pool, self.settings, self.port = channel, pool, settings, port
        self.stub = bundles_pb2_grpc.BundleServiceStub(channel)

    async def user(self, role: str = "editor", org_id: str | None = None) -> tuple[ApiUser, BundlesClient]:
        u = await make_user(self.pool, self.settings, role, org_id)
        return u, BundlesClient(self.channel, token=u.token)


async def _serve(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    auth = build_user_authenticator(pool, settings.user_auth)
    server = await start_server([build_bundle_binding(pool, settings, auth)], "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            yield Api(ch, pool, settings, server.port)
    finally:
        await server.stop(0.5)


@pytest.fixture
async def api(settings: Settings, pool: asyncpg.Pool, key: Ed25519PrivateKey) -> AsyncIterator[Api]:
    _trust(settings, key)
    async for a in _serve(settings, pool):
        yield a


def python_bundle(path: Path, key: Ed25519PrivateKey, code: bytes = HANDLER) -> Path:
    return signed_zip(path, key, "python", "handler.main", {"handler.py": code})


def _local(url: str) -> Path:
    assert url.startswith("file://")
    return Path(url.removeprefix("file://"))


def stored_objects(settings: Settings) -> list[Path]:
    """Every object of the local bundle store, staged or published."""
    roots = (settings.data_dir / "bundles", settings.data_dir / "bundles-staging")
    return sorted(p for r in roots if r.exists() for p in r.rglob("*") if p.is_file())


async def _raw_upload(api: Api, user: ApiUser, data: bytes, *, size: int, sha256: str) -> pb.UploadBundleResponse:
    async def reqs() -> AsyncIterator[pb.UploadBundleRequest]:
        yield pb.UploadBundleRequest(header=pb.BundleUploadHeader(name="b", size_bytes=size, sha256=sha256))
        for i in range(0, len(data), 1000):
            yield pb.UploadBundleRequest(chunk=data[i : i + 1000])

    resp: pb.UploadBundleResponse = await api.stub.UploadBundle(reqs(), metadata=user.metadata)
    return resp


def _reason(err: grpc.aio.AioRpcError) -> str:
    from trace_platform.clients.errors import reason_of

    return reason_of(err)


# --- the streamed (local store) path ---------------------------------------------------


async def test_upload_get_list_and_the_repository_url(api: Api, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    size, sha = file_digest(archive)
    bundle = await client.upload(archive)
    assert bundle.ready and bundle.sha256 == sha and bundle.size_bytes == size
    assert bundle.runtime == "python" and bundle.entrypoint == "handler.main" and bundle.name == "a.zip"
    assert await client.get(bundle.id) == bundle

    record = await BundleRepository(api.pool).get(user.org_id, bundle.id)
    assert record is not None and record.finalized and record.sha256 == sha and record.size == size
    assert record.url == f"file://{api.settings.data_dir}/bundles/{user.org_id}/{sha}.zip"
    assert bundle_objects(api.settings).runnable_url(record.url, 60) == record.url  # the Lite invoker reads it
    published = _local(record.url)
    assert published.read_bytes() == archive.read_bytes()
    assert published.stat().st_mode & 0o077 == 0  # readable by the platform alone

    # Same bytes again: the same bundle (idempotent by content), no second object.
    again = await client.upload(archive, name="other-name")
    assert again.id == bundle.id
    assert stored_objects(api.settings) == [published]


async def test_list_pages_by_keyset_and_refuses_a_forged_token(
    api: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    user, client = await api.user("editor")
    made = [
        await client.upload(python_bundle(tmp_path / f"b{i}.zip", key, HANDLER + f"# {i}\n".encode())) for i in range(5)
    ]
    _, viewer = await api.user("viewer", user.org_id)
    first = await viewer.list(page_size=2)
    assert [b.id for b in first.items] == [b.id for b in made[:2]] and first.next_page_token
    second = await viewer.list(page_size=2, page_token=first.next_page_token)
    third = await viewer.list(page_size=2, page_token=second.next_page_token)
    assert [b.id for b in second.items + third.items] == [b.id for b in made[2:]]
    assert third.next_page_token == ""
    assert [b.id async for b in viewer.iterate(page_size=3)] == [b.id for b in made]
    with pytest.raises(InvalidArgument) as exc:
        await viewer.list(page_token="bm90LWEtdG9rZW4")
    assert exc.value.reason == "PAGE_TOKEN_INVALID"


@pytest.mark.parametrize(
    ("case", "reason", "kind"),
    [
        ("hash", "BUNDLE_HASH_MISMATCH", FailedPrecondition),
        ("size_short", "BUNDLE_SIZE_MISMATCH", FailedPrecondition),
        ("size_long", "BUNDLE_SIZE_MISMATCH", FailedPrecondition),
        ("untrusted_key", "BUNDLE_KEY_UNTRUSTED", PermissionDenied),
        ("tampered_manifest", "BUNDLE_SIGNATURE_INVALID", PermissionDenied),
        ("not_a_zip", "BUNDLE_NOT_A_ZIP", FailedPrecondition),
    ],
)
async def test_a_refused_upload_leaves_nothing_usable(
    api: Api, key: Ed25519PrivateKey, tmp_path: Path, case: str, reason: str, kind: type[TraceError]
) -> None:
    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "good.zip", key)
    data = archive.read_bytes()
    size, sha = file_digest(archive)
    if case == "untrusted_key":
        data = python_bundle(tmp_path / "evil.zip", Ed25519PrivateKey.generate()).read_bytes()
    elif case == "tampered_manifest":
        data = tampered(archive, tmp_path / "tampered.zip").read_bytes()
    elif case == "not_a_zip":
        data = b"PK\x03\x04 this is no zip" * 10
    if case in ("untrusted_key", "tampered_manifest", "not_a_zip"):
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    declared_size = {"size_short": size + 10, "size_long": size - 10}.get(case, size)
    declared_sha = "0" * 64 if case == "hash" else sha
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await _raw_upload(api, user, data, size=declared_size, sha256=declared_sha)
    assert _reason(exc.value) == reason
    assert exc.value.code().name == kind.kind.name
    assert (await client.list()).items == []
    assert stored_objects(api.settings) == []
    # The server survives and the good archive still uploads.
    assert (await client.upload(archive)).ready


def tampered(archive: Path, out: Path) -> Path:
    """The same zip with the signed manifest body changed (a file's size) and the old signature."""
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    envelope = json.loads(members[MANIFEST_NAME])
    envelope["manifest"]["entrypoint"] = "handler.other"
    members[MANIFEST_NAME] = json.dumps(envelope).encode()
    return write_zip(out, [Member(n, d) for n, d in members.items()])


async def test_protocol_errors_and_limits(
    settings: Settings, pool: asyncpg.Pool, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    small = replace(settings, bundles=BundleSettings(max_upload_bytes=2000))
    _trust(small, key)
    async for api in _serve(small, pool):
        user, client = await api.user("editor")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await _raw_upload(api, user, b"x" * 10, size=3000, sha256="a" * 64)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and _reason(exc.value) == "BUNDLE_TOO_LARGE"

        async def chunk_first() -> AsyncIterator[pb.UploadBundleRequest]:
            yield pb.UploadBundleRequest(chunk=b"abc")

        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await api.stub.UploadBundle(chunk_first(), metadata=user.metadata)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _reason(exc.value) == "UPLOAD_HEADER_REQUIRED"
        with pytest.raises(ResourceExhausted):
            big = signed_zip(
                tmp_path / "big.zip", key, "python", "handler.main", {"handler.py": HANDLER, "pad": os.urandom(4000)}
            )
            await client.upload_stream(big)
        # A local store hands out no pre-signed URL, and says why.
        with pytest.raises(FailedPrecondition) as fp:
            await client.create_upload(python_bundle(tmp_path / "a.zip", key))
        assert fp.value.reason == "BUNDLE_UPLOAD_URL_UNSUPPORTED"
        assert stored_objects(small) == []


async def test_another_org_and_a_weak_role(api: Api, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    owner, client = await api.user("editor")
    bundle = await client.upload(python_bundle(tmp_path / "a.zip", key))
    _, stranger = await api.user("admin")  # an admin, of another org
    with pytest.raises(NotFound) as other:
        await stranger.get(bundle.id)
    with pytest.raises(NotFound) as missing:
        await client.get(str(uuid.uuid4()))
    with pytest.raises(NotFound) as garbage:
        await client.get("not-a-uuid")
    assert {(e.value.reason, e.value.message) for e in (other, missing, garbage)} == {
        ("BUNDLE_NOT_FOUND", "no such bundle")
    }
    with pytest.raises(NotFound):
        await stranger.finalize(bundle.id)
    assert (await stranger.list()).items == []
    assert await BundleRepository(api.pool).get(str(uuid.uuid4()), bundle.id) is None

    _, viewer = await api.user("viewer", owner.org_id)
    assert (await viewer.get(bundle.id)).id == bundle.id
    writes: list[Callable[[], Awaitable[object]]] = [
        lambda: viewer.upload_stream(python_bundle(tmp_path / "b.zip", key, HANDLER + b"#\n")),
        lambda: viewer.finalize(bundle.id),
    ]
    for call in writes:
        with pytest.raises(PermissionDenied) as denied:
            await call()
        assert denied.value.reason == "ROLE_REQUIRED"
    assert [b.id for b in (await client.list()).items] == [bundle.id]


async def test_uploads_are_bounded_in_number_and_idle_time(
    settings: Settings, pool: asyncpg.Pool, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    one = replace(settings, bundles=BundleSettings(max_concurrent=1, idle_seconds=1.0))
    _trust(one, key)
    archive = python_bundle(tmp_path / "a.zip", key)
    size, sha = file_digest(archive)
    never = asyncio.Event()
    async for api in _serve(one, pool):
        user, client = await api.user("editor")

        async def stalls() -> AsyncIterator[pb.UploadBundleRequest]:
            yield pb.UploadBundleRequest(header=pb.BundleUploadHeader(size_bytes=size, sha256=sha))
            yield pb.UploadBundleRequest(chunk=archive.read_bytes()[:10])
            await never.wait()

        stalled = asyncio.ensure_future(api.stub.UploadBundle(stalls(), metadata=user.metadata))
        await asyncio.sleep(0.3)
        with pytest.raises(ResourceExhausted) as busy:
            await client.upload_stream(archive)
        assert busy.value.reason == "BUNDLE_UPLOADS_BUSY"
        with pytest.raises(grpc.aio.AioRpcError) as idle:
            await stalled
        assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and _reason(idle.value) == "UPLOAD_STALLED"
        assert stored_objects(one) == [] and (await client.list()).items == []
        assert (await client.upload_stream(archive)).ready  # the slot was given back
    never.set()


# --- the uploaded bundle runs ------------------------------------------------------------


async def test_the_repository_url_runs_through_the_invoker(api: Api, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    user, client = await api.user("editor")
    bundle = await client.upload(python_bundle(tmp_path / "a.zip", key))
    record = await BundleRepository(api.pool).get(user.org_id, bundle.id)
    assert record is not None and record.finalized and record.url
    runs = shared_tmp_dir("trace-bundle-runs-")
    try:
        invoker = LocalInvoker(
            InvokerSettings(limits=UdfLimits(timeout_seconds=20.0)),
            TrustedKeys.of(key.public_key()),
            bundle_roots=(api.settings.data_dir / "bundles",),  # the invoker's default root
            runs_dir=runs,
        )
        try:
            result = await invoker.invoke(
                invocation(record.url, bundle_sha256=record.sha256, config={"x": 7}, inputs={"rows": [1, 2, 3]})
            )
        finally:
            await invoker.close()
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    assert result.error_reason == "" and result.exit_code == 0, result
    assert json.loads(result.result_json) == {"seen": 7, "n": 3}


# --- the pre-signed S3 path -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
async def s3_api(
    settings: Settings, pool: asyncpg.Pool, key: Ed25519PrivateKey, moto: str
) -> AsyncIterator[tuple[Api, str]]:
    import botocore.session

    bucket = f"bundles-{uuid.uuid4().hex[:8]}"
    store = ObjectStoreSettings(s3_endpoint_url=moto, s3_access_key_id="testing", s3_secret_access_key="testing")
    s3 = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    s3.create_bucket(Bucket=bucket)
    s3_settings = replace(settings, object_store=store, bundles=BundleSettings(uri=f"s3://{bucket}/trace/bundles"))
    _trust(s3_settings, key)
    async for a in _serve(s3_settings, pool):
        yield a, bucket


def _keys(moto: str, bucket: str) -> list[str]:
    import botocore.session

    s3 = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


async def test_presigned_put_then_finalize(
    s3_api: tuple[Api, str], moto: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    api, bucket = s3_api
    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    size, sha = file_digest(archive)

    started = await client.create_upload(archive)
    assert started.url.startswith(moto) and started.bundle.state == "pending"
    # Not usable, and not finalizable before its bytes are there.
    record = await BundleRepository(api.pool).get(user.org_id, started.bundle.id)
    assert record is not None and not record.finalized and record.url is None
    with pytest.raises(NotFound) as early:
        await client.finalize(started.bundle.id)
    assert early.value.reason == "BUNDLE_NOT_UPLOADED"

    await put_file(started.url, archive)
    assert _keys(moto, bucket) == [f"trace/bundles-staging/{user.org_id}/{started.bundle.id}.zip"]
    done = await client.finalize(started.bundle.id)
    assert done.ready and done.id == started.bundle.id and done.sha256 == sha and done.size_bytes == size
    assert await client.finalize(done.id) == done  # finalize again: the same answer
    record = await BundleRepository(api.pool).get(user.org_id, done.id)
    assert record is not None and record.finalized
    assert record.url == f"s3://{bucket}/trace/bundles/{user.org_id}/{sha}.zip"
    assert _keys(moto, bucket) == [f"trace/bundles/{user.org_id}/{sha}.zip"]  # staging removed

    # What a runner without store credentials gets: a pre-signed GET of the same bytes.
    from trace_platform.adapters.objectstore.bundle_objects import S3BundleObjects

    get_url = S3BundleObjects(api.settings.object_store).runnable_url(record.url, 60)
    async with aiohttp.ClientSession() as http, http.get(get_url) as resp:
        assert resp.status == 200 and await resp.read() == archive.read_bytes()

    # The same bytes again: the existing bundle, no URL to PUT to.
    again = await client.upload(archive)
    assert again.id == done.id


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("other_bytes", "BUNDLE_HASH_MISMATCH"),
        ("larger", "BUNDLE_SIZE_MISMATCH"),
        ("untrusted_key", "BUNDLE_KEY_UNTRUSTED"),
        ("tampered_manifest", "BUNDLE_SIGNATURE_INVALID"),
    ],
)
async def test_finalize_refuses_and_nothing_is_usable(
    s3_api: tuple[Api, str], moto: str, key: Ed25519PrivateKey, tmp_path: Path, case: str, reason: str
) -> None:
    api, bucket = s3_api
    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    declared = archive
    if case == "untrusted_key":
        declared = archive = python_bundle(tmp_path / "evil.zip", Ed25519PrivateKey.generate())
    elif case == "tampered_manifest":
        declared = archive = tampered(archive, tmp_path / "t.zip")
    started = await client.create_upload(declared)
    if case == "other_bytes":  # same size, one byte flipped
        data = bytearray(declared.read_bytes())
        data[len(data) // 2] ^= 0xFF
        archive = tmp_path / "flipped.zip"
        archive.write_bytes(bytes(data))
    elif case == "larger":
        archive = tmp_path / "larger.zip"
        archive.write_bytes(declared.read_bytes() + b"\0" * 100)
    await put_file(started.url, archive)
    with pytest.raises(TraceError) as exc:
        await client.finalize(started.bundle.id)
    assert exc.value.reason == reason
    failed = await client.get(started.bundle.id)
    assert failed.state == "failed" and failed.failure_reason == reason
    record = await BundleRepository(api.pool).get(user.org_id, started.bundle.id)
    assert record is not None and not record.finalized and record.url is None
    assert _keys(moto, bucket) == []  # the staged object is gone, nothing was published
    with pytest.raises(FailedPrecondition) as again:
        await client.finalize(started.bundle.id)
    assert again.value.reason == "BUNDLE_FAILED"
    # A put after the refusal changes nothing: the id stays refused.
    await put_file(started.url, declared)
    with pytest.raises(FailedPrecondition):
        await client.finalize(started.bundle.id)


async def test_bundle_ids_never_change_content(
    s3_api: tuple[Api, str], moto: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A READY bundle's object is named by its sha256; a second upload started for the
    same bytes finalizes to the first bundle, and a PUT of other bytes to a finished
    upload's URL never reaches the published object."""
    api, bucket = s3_api
    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    first = await client.create_upload(archive)
    second = await client.create_upload(archive)  # both started before either finished
    assert first.bundle.id != second.bundle.id
    for started in (first, second):
        await put_file(started.url, archive)
    a = await client.finalize(first.bundle.id)
    b = await client.finalize(second.bundle.id)
    assert b.id == a.id  # the existing bundle answers; the second row is gone
    with pytest.raises(NotFound):
        await client.get(second.bundle.id)
    await put_file(first.url, python_bundle(tmp_path / "x.zip", key, HANDLER + b"# x\n"))
    assert (await client.finalize(a.id)) == a
    record = await BundleRepository(api.pool).get(user.org_id, a.id)
    assert record is not None and record.url
    published = record.url.removeprefix(f"s3://{bucket}/")
    import botocore.session

    s3 = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    assert s3.get_object(Bucket=bucket, Key=published)["Body"].read() == archive.read_bytes()
    assert [x.id for x in (await client.list()).items] == [a.id]


# --- the CLI -------------------------------------------------------------------------------


async def test_cli_bundle_upload(api: Api, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from trace_platform.cli.main import cli

    user, client = await api.user("editor")
    archive = python_bundle(tmp_path / "cli.zip", key)
    _, sha = file_digest(archive)
    env = {"TRACE_ADDR": f"127.0.0.1:{api.port}", "TRACE_USER_TOKEN": user.token, "TRACE_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    out = await asyncio.to_thread(runner.invoke, cli, ["bundle", "upload", str(archive), "--json"], env=env)
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)
    assert shown["sha256"] == sha and shown["state"] == "ready" and shown["runtime"] == "python"
    assert (await client.get(shown["id"])).sha256 == sha
    plain = await asyncio.to_thread(runner.invoke, cli, ["bundle", "upload", str(archive)], env=env)
    assert plain.exit_code == 0 and f"bundle {shown['id']} sha256 {sha}" in plain.output  # idempotent

    bad = tmp_path / "evil.zip"
    python_bundle(bad, Ed25519PrivateKey.generate())
    refused = await asyncio.to_thread(runner.invoke, cli, ["bundle", "upload", str(bad)], env=env)
    assert refused.exit_code != 0 and "BUNDLE_KEY_UNTRUSTED" in refused.output


async def test_finalize_with_the_store_down_decides_nothing(
    settings: Settings, pool: asyncpg.Pool, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from trace_platform.lite.anvil import free_port

    dead = ObjectStoreSettings(
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        connect_timeout_seconds=0.5,
    )
    down = replace(settings, object_store=dead, bundles=BundleSettings(uri="s3://nowhere/bundles"))
    _trust(down, key)
    async for api in _serve(down, pool):
        user, client = await api.user("editor")
        started = await client.create_upload(python_bundle(tmp_path / "a.zip", key))
        with pytest.raises(TraceError) as exc:
            await client.finalize(started.bundle.id)
        assert exc.value.kind.name == "UNAVAILABLE" and exc.value.reason == "OBJECT_STORE_UNAVAILABLE"
        again = await client.get(started.bundle.id)
        assert again.state == "pending" and again.failure_reason == ""  # retryable: still finalizable
        record = await BundleRepository(pool).get(user.org_id, started.bundle.id)
        assert record is not None and record.state == "pending" and not record.finalized


async def test_every_rpc_refuses_bad_credentials_and_weak_roles(
    api: Api, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    from tests.api_support import bad_tokens

    owner, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    bundle = await client.upload(archive)
    size, sha = file_digest(archive)
    header = pb.BundleUploadHeader(size_bytes=size, sha256=sha)

    async def upload_reqs() -> AsyncIterator[pb.UploadBundleRequest]:
        yield pb.UploadBundleRequest(header=header)
        yield pb.UploadBundleRequest(chunk=archive.read_bytes())

    def calls(md: list[tuple[str, str]] | None) -> dict[str, Callable[[], Awaitable[object]]]:
        s = api.stub
        return {
            "UploadBundle": lambda: s.UploadBundle(upload_reqs(), metadata=md),
            "CreateBundleUpload": lambda: s.CreateBundleUpload(
                pb.CreateBundleUploadRequest(header=header), metadata=md
            ),
            "FinalizeBundle": lambda: s.FinalizeBundle(pb.FinalizeBundleRequest(bundle_id=bundle.id), metadata=md),
            "GetBundle": lambda: s.GetBundle(pb.GetBundleRequest(bundle_id=bundle.id), metadata=md),
            "ListBundles": lambda: s.ListBundles(pb.ListBundlesRequest(), metadata=md),
        }

    for name, token in bad_tokens(api.settings, owner).items():
        md = None if token is None else [("authorization", f"Bearer {token}")]
        for rpc, call in calls(md).items():
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call()
            assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, rpc)
            assert _reason(exc.value).startswith("USER_TOKEN"), (name, rpc)

    viewer, _ = await api.user("viewer", owner.org_id)
    for rpc, call in calls(viewer.metadata).items():
        if rpc in ("GetBundle", "ListBundles"):
            await call()
            continue
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call()
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED and _reason(exc.value) == "ROLE_REQUIRED", rpc
    assert [b.id for b in (await client.list()).items] == [bundle.id]  # nothing was written


async def test_abandoned_presigned_uploads_expire(
    s3_api: tuple[Api, str], moto: str, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    api, bucket = s3_api
    _, client = await api.user("editor")
    archive = python_bundle(tmp_path / "a.zip", key)
    old = await client.create_upload(archive)
    await put_file(old.url, archive)  # put, never finalized
    recent = await client.create_upload(python_bundle(tmp_path / "b.zip", key, HANDLER + b"# b\n"))
    await api.pool.execute(
        "UPDATE bundles SET created_at = now() - interval '2 hours' - make_interval(secs => $2) WHERE id = $1",
        uuid.UUID(old.bundle.id),
        float(api.settings.bundles.upload_url_seconds),
    )
    await client.create_upload(python_bundle(tmp_path / "c.zip", key, HANDLER + b"# c\n"))  # sweeps the org
    expired = await client.get(old.bundle.id)
    assert expired.state == "failed" and expired.failure_reason == "BUNDLE_UPLOAD_EXPIRED"
    assert (await client.get(recent.bundle.id)).state == "pending"  # its URL is still valid
    assert _keys(moto, bucket) == []  # the abandoned staged object is gone
    with pytest.raises(FailedPrecondition) as exc:
        await client.finalize(old.bundle.id)
    assert exc.value.reason == "BUNDLE_FAILED"
