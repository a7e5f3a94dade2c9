"""Typed async client of the BundleService: upload a signed bundle (streamed, or by a
pre-signed PUT when the platform stores bundles on S3), finalize, get and list."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc

from trace_platform.clients.api.pages import Page, every_item
from trace_platform.clients.errors import call
from trace_platform.core.errors import FailedPrecondition, Unavailable
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.gen.trace.api.v1 import bundles_pb2 as pb
from trace_platform.gen.trace.api.v1 import bundles_pb2_grpc

CHUNK_BYTES = 1024 * 1024
_STATES = {pb.BUNDLE_STATE_PENDING: "pending", pb.BUNDLE_STATE_READY: "ready", pb.BUNDLE_STATE_FAILED: "failed"}


@dataclass(frozen=True)
class Bundle:
    id: str
    name: str
    sha256: str
    size_bytes: int
    runtime: str
    entrypoint: str
    state: str  # pending | ready | failed
    failure_reason: str
    created_at: datetime
    finalized_at: datetime | None

    @property
    def ready(self) -> bool:
        return self.state == "ready"


@dataclass(frozen=True)
class BundleUpload:
    """A started pre-signed upload: PUT the archive to ``url``, then finalize ``bundle``.
    An empty ``url``: the org already has these bytes, ``bundle`` is READY."""

    bundle: Bundle
    url: str
    expires_at: datetime | None


def _bundle(b: pb.Bundle) -> Bundle:
    return Bundle(
        id=b.id,
        name=b.name,
        sha256=b.sha256,
        size_bytes=b.size_bytes,
        runtime=b.runtime,
        entrypoint=b.entrypoint,
        state=_STATES.get(b.state, "unknown"),
        failure_reason=b.failure_reason,
        created_at=b.create_time.ToDatetime().astimezone(),
        finalized_at=b.finalize_time.ToDatetime().astimezone() if b.HasField("finalize_time") else None,
    )


def file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


class BundlesClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str) -> None:
        self._stub = bundles_pb2_grpc.BundleServiceStub(channel)
        self._md = ((AUTHORIZATION, f"Bearer {token}"),)

    def _header(self, path: Path, name: str | None, runtime: str) -> pb.BundleUploadHeader:
        size, sha = file_digest(path)
        return pb.BundleUploadHeader(
            name=path.name if name is None else name, runtime=runtime, size_bytes=size, sha256=sha
        )

    async def upload(self, path: Path, *, name: str | None = None, runtime: str = "") -> Bundle:
        """Upload ``path`` and answer the READY bundle: by pre-signed PUT then finalize
        when the platform's bundle store is S3, else streamed through the API."""
        header = self._header(path, name, runtime)
        try:
            started = await self._create_upload(header)
        except FailedPrecondition as exc:
            if exc.reason != "BUNDLE_UPLOAD_URL_UNSUPPORTED":
                raise
            return await self._stream(path, header)
        if not started.url:
            return started.bundle
        await put_file(started.url, path)
        return await self.finalize(started.bundle.id)

    async def upload_stream(self, path: Path, *, name: str | None = None, runtime: str = "") -> Bundle:
        """The streaming UploadBundle RPC (works with every bundle store)."""
        return await self._stream(path, self._header(path, name, runtime))

    async def _stream(self, path: Path, header: pb.BundleUploadHeader) -> Bundle:
        async def requests() -> AsyncIterator[pb.UploadBundleRequest]:
            yield pb.UploadBundleRequest(header=header)
            with path.open("rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    yield pb.UploadBundleRequest(chunk=chunk)

        resp = await call(self._stub.UploadBundle(requests(), metadata=self._md))
        return _bundle(resp.bundle)

    async def create_upload(self, path: Path, *, name: str | None = None, runtime: str = "") -> BundleUpload:
        """Start a pre-signed upload (S3 bundle store): PUT ``path`` to ``url``, then finalize."""
        return await self._create_upload(self._header(path, name, runtime))

    async def _create_upload(self, header: pb.BundleUploadHeader) -> BundleUpload:
        req = pb.CreateBundleUploadRequest(header=header)
        resp = await call(self._stub.CreateBundleUpload(req, metadata=self._md))
        expires = resp.upload_url_expire_time.ToDatetime().astimezone() if resp.upload_url else None
        return BundleUpload(_bundle(resp.bundle), resp.upload_url, expires)

    async def finalize(self, bundle_id: str) -> Bundle:
        req = pb.FinalizeBundleRequest(bundle_id=bundle_id)
        return _bundle((await call(self._stub.FinalizeBundle(req, metadata=self._md))).bundle)

    async def get(self, bundle_id: str) -> Bundle:
        req = pb.GetBundleRequest(bundle_id=bundle_id)
        return _bundle((await call(self._stub.GetBundle(req, metadata=self._md))).bundle)

    async def list(self, *, page_size: int = 0, page_token: str = "") -> Page[Bundle]:
        req = pb.ListBundlesRequest(page_size=page_size, page_token=page_token)
        resp = await call(self._stub.ListBundles(req, metadata=self._md))
        return Page([_bundle(b) for b in resp.bundles], resp.next_page_token)

    def iterate(self, *, page_size: int = 0) -> AsyncIterator[Bundle]:
        """Every bundle of the org, page by page (the next page fetched when needed)."""
        return every_item(lambda token: self.list(page_size=page_size, page_token=token))


async def put_file(url: str, path: Path) -> None:
    """HTTP PUT of the archive to a pre-signed URL (the URL is a credential: never logged)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            with path.open("rb") as fh:
                data = fh.read()
            async with session.put(url, data=data) as resp:
                if resp.status >= 300:
                    raise Unavailable("BUNDLE_PUT_FAILED", f"the object store answered HTTP {resp.status}")
    except aiohttp.ClientError:
        raise Unavailable("BUNDLE_PUT_FAILED", "the object store could not be reached") from None
