"""BundleService logic: uploads are checked before anything becomes usable.

Two ways in. ``upload`` receives the archive over a client stream into a private
temporary file. ``create_upload`` hands out a pre-signed S3 PUT URL to a staging key and
``finalize`` later copies that object into a private temporary file. Either way the
same ``_check`` runs on that file (declared size, declared SHA-256, then the invoker's
own verification: ``core.bundles.extract_bundle``, signature included) and that same
file is published at ``<root>/<org>/<sha256>.zip``; only then is the row READY and its
``url`` set. A refusal marks the row FAILED (never usable) and deletes the staged object.

Same content, same org: the existing READY bundle is the answer (idempotent), never a
second copy and never ALREADY_EXISTS. A bundle's id always names the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trace_platform.adapters.objectstore.bundle_objects import BundleObjects, TooLarge
from trace_platform.adapters.postgres.bundle_repository import BundleRecord, BundleRepository
from trace_platform.core.bundle_manifest import RUNTIMES, BundleRejected, Manifest, TrustedKeys
from trace_platform.core.bundle_paths import SHA256_RE, final_uri, staging_uri
from trace_platform.core.bundles import BundleLimits, extract_bundle, remove_tree
from trace_platform.core.config import BundleSettings
from trace_platform.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TraceError,
)
from trace_platform.core.paging import PageRequest
from trace_platform.servers.api.identity import Principal

MAX_NAME_CHARS = 128
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# A pre-signed upload is abandoned this long after its URL expired.
ABANDONED_GRACE_SECONDS = 3600.0
EXPIRE_BATCH = 16
# Finalize failures that decide nothing about the bundle: the PUT has not happened yet,
# or the store is down. The bundle stays pending and Finalize may be called again.
UNDECIDED = frozenset({"BUNDLE_NOT_UPLOADED", "OBJECT_STORE_UNAVAILABLE"})


@dataclass(frozen=True)
class UploadHeader:
    name: str
    runtime: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PresignedUpload:
    bundle: BundleRecord
    url: str  # empty: the bundle is already READY
    expires_at: datetime | None


@dataclass(frozen=True)
class BundlePage:
    bundles: list[BundleRecord]
    next_page_token: str


def not_found() -> NotFound:
    # One answer for missing, another org's and malformed ids: no existence leak.
    return NotFound("BUNDLE_NOT_FOUND", "no such bundle")


class BundleService:
    def __init__(
        self,
        repo: BundleRepository,
        objects: BundleObjects,
        root: str,
        trusted: TrustedKeys,
        settings: BundleSettings,
        temp_dir: Path | None = None,
    ) -> None:
        self._repo = repo
        self._objects = objects
        self._root = root
        self._trusted = trusted
        self._settings = settings
        self._temp_dir = temp_dir
        self._busy = 0
        # The invoker's cap unless uploads are capped lower: a bundle it would refuse
        # is refused here already.
        self._limits = BundleLimits(max_archive_bytes=min(settings.max_upload_bytes, BundleLimits().max_archive_bytes))

    def check_header(self, header: UploadHeader) -> UploadHeader:
        sha = header.sha256.lower()
        if not SHA256_RE.match(sha):
            raise InvalidArgument("INVALID_SHA256", "sha256 must be 64 hex digits", field="sha256")
        if header.size <= 0:
            raise InvalidArgument("INVALID_SIZE", "size_bytes must be positive", field="size_bytes")
        if header.size > self._limits.max_archive_bytes:
            raise ResourceExhausted(
                "BUNDLE_TOO_LARGE", f"bundles are limited to {self._limits.max_archive_bytes} bytes"
            )
        if header.runtime and header.runtime not in RUNTIMES:
            raise InvalidArgument("BUNDLE_RUNTIME_UNSUPPORTED", f"runtime must be one of {', '.join(RUNTIMES)}")
        if len(header.name) > MAX_NAME_CHARS or not header.name.isprintable():
            raise InvalidArgument("INVALID_NAME", f"name must be at most {MAX_NAME_CHARS} printable characters")
        return UploadHeader(header.name, header.runtime, header.size, sha)

    # --- streamed upload -----------------------------------------------------------

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Bound the temporary disk and CPU the checks take: refuse, never queue."""
        if self._busy >= self._settings.max_concurrent:
            raise ResourceExhausted("BUNDLE_UPLOADS_BUSY", "too many bundle uploads at once; retry shortly")
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    async def upload(self, who: Principal, header: UploadHeader, chunks: AsyncIterator[bytes]) -> BundleRecord:
        header = self.check_header(header)
        with self._slot():
            return await self._upload(who, header, chunks)

    async def _upload(self, who: Principal, header: UploadHeader, chunks: AsyncIterator[bytes]) -> BundleRecord:
        work = Path(tempfile.mkdtemp(prefix="bundle-upload-", dir=self._temp_dir))
        try:
            archive = work / "bundle.zip"
            await self._receive(chunks, archive, header.size)
            existing = await self._repo.ready_by_sha256(who.org_id, header.sha256)
            if existing is not None:
                # Same bytes as a bundle that passed every check: it is the answer.
                await asyncio.to_thread(_check_digest, archive, header)
                return existing
            manifest = await asyncio.to_thread(self._check, archive, header, work)
            url = final_uri(self._root, who.org_id, header.sha256)
            await asyncio.to_thread(self._objects.publish, archive, url)
            return await self._repo.insert_ready(
                str(uuid.uuid4()),
                who.org_id,
                name=header.name,
                sha256=header.sha256,
                size=header.size,
                runtime=manifest.runtime,
                entrypoint=manifest.entrypoint,
                url=url,
                created_by=who.user_id,
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _receive(self, chunks: AsyncIterator[bytes], dest: Path, declared: int) -> None:
        received = 0
        stream = aiter(chunks)
        with dest.open("xb") as out:
            while True:
                try:
                    async with asyncio.timeout(self._settings.idle_seconds):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise DeadlineExceeded("UPLOAD_STALLED", "the upload sent nothing for too long") from None
                if len(chunk) > MAX_CHUNK_BYTES:
                    raise InvalidArgument("CHUNK_TOO_LARGE", f"chunks are limited to {MAX_CHUNK_BYTES} bytes")
                received += len(chunk)
                if received > declared:
                    raise BundleRejected("BUNDLE_SIZE_MISMATCH", "more bytes arrived than size_bytes declared")
                out.write(chunk)
        if received != declared:
            raise BundleRejected("BUNDLE_SIZE_MISMATCH", f"{received} bytes arrived, size_bytes declared {declared}")

    # --- pre-signed upload -----------------------------------------------------------

    async def create_upload(self, who: Principal, header: UploadHeader) -> PresignedUpload:
        header = self.check_header(header)
        if not self._objects.presigned_uploads:
            raise FailedPrecondition(
                "BUNDLE_UPLOAD_URL_UNSUPPORTED",
                "the bundle store is a local directory: upload through the streaming UploadBundle RPC",
            )
        await self._expire_abandoned(who.org_id)
        existing = await self._repo.ready_by_sha256(who.org_id, header.sha256)
        if existing is not None:
            return PresignedUpload(existing, "", None)
        bundle_id = str(uuid.uuid4())
        staged = staging_uri(self._root, who.org_id, bundle_id)
        seconds = self._settings.upload_url_seconds
        url = self._objects.presign_put(staged, seconds)
        record = await self._repo.insert_pending(
            bundle_id,
            who.org_id,
            name=header.name,
            sha256=header.sha256,
            size=header.size,
            runtime=header.runtime,
            staging_uri=staged,
            created_by=who.user_id,
        )
        return PresignedUpload(record, url, datetime.now(UTC) + timedelta(seconds=seconds))

    async def _expire_abandoned(self, org_id: str) -> None:
        """Pre-signed uploads never finalized, well after their URL expired, are refused
        and their staged objects deleted: a few at each new upload of the org (no sweeper
        loop to run). Before then a late Finalize still works."""
        older_than = self._settings.upload_url_seconds + ABANDONED_GRACE_SECONDS
        for staged in await self._repo.expire_pending(org_id, older_than, EXPIRE_BATCH):
            await asyncio.to_thread(self._objects.delete, staged)

    async def finalize(self, who: Principal, bundle_id: str) -> BundleRecord:
        record = await self._repo.get(who.org_id, bundle_id)
        if record is None:
            raise not_found()
        if record.state == "ready":
            return record
        if record.state == "failed":
            raise FailedPrecondition("BUNDLE_FAILED", f"this bundle was refused ({record.failure}); upload it again")
        with self._slot():
            return await self._finalize(who, record)

    async def _finalize(self, who: Principal, record: BundleRecord) -> BundleRecord:
        claimed = await self._repo.claim(who.org_id, record.id)
        if claimed is None:
            raise FailedPrecondition("BUNDLE_FINALIZE_IN_PROGRESS", "another Finalize of this bundle is running")
        header = UploadHeader(claimed.name, claimed.runtime, claimed.size, claimed.sha256)
        work = Path(tempfile.mkdtemp(prefix="bundle-finalize-", dir=self._temp_dir))
        try:
            archive = work / "bundle.zip"
            url = final_uri(self._root, who.org_id, header.sha256)
            try:
                await asyncio.to_thread(self._fetch_staged, claimed.staging_uri, archive, header.size)
                manifest = await asyncio.to_thread(self._check, archive, header, work)
            except TraceError as exc:
                if exc.reason in UNDECIDED:
                    await self._repo.release(who.org_id, claimed.id)
                    raise
                # Refused: never usable, and its bytes are not kept.
                await self._repo.mark_failed(who.org_id, claimed.id, exc.reason)
                await asyncio.to_thread(self._objects.delete, claimed.staging_uri)
                raise
            except BaseException:
                await self._release_quietly(who.org_id, claimed.id)
                raise
            try:
                await asyncio.to_thread(self._objects.publish, archive, url)
            except BaseException:
                await self._release_quietly(who.org_id, claimed.id)
                raise
            ready = await self._repo.mark_ready(who.org_id, claimed.id, url, manifest.runtime, manifest.entrypoint)
            await asyncio.to_thread(self._objects.delete, claimed.staging_uri)
            if ready is None:  # the same bytes became READY under another id meanwhile
                existing = await self._repo.ready_by_sha256(who.org_id, header.sha256)
                if existing is None:
                    raise FailedPrecondition("BUNDLE_FINALIZE_IN_PROGRESS", "the bundle changed state meanwhile")
                return existing
            return ready
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _release_quietly(self, org_id: str, bundle_id: str) -> None:
        """Give the claim back after an unexpected failure; if even that fails the claim
        goes stale and the next Finalize takes it (STALE_CLAIM_SECONDS)."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._repo.release(org_id, bundle_id))

    def _fetch_staged(self, uri: str, dest: Path, declared: int) -> None:
        try:
            self._objects.fetch(uri, dest, declared)
        except TooLarge:
            raise BundleRejected("BUNDLE_SIZE_MISMATCH", "the object is larger than size_bytes declared") from None

    def _check(self, archive: Path, header: UploadHeader, work: Path) -> Manifest:
        """Declared size and digest, then everything the invoker checks before a run."""
        _check_digest(archive, header)
        extracted = extract_bundle(archive, self._trusted, self._limits, parent=work)
        remove_tree(extracted.root)
        manifest = extracted.manifest
        if header.runtime and header.runtime != manifest.runtime:
            raise BundleRejected("BUNDLE_RUNTIME_MISMATCH", "the signed manifest names another runtime")
        return manifest

    # --- reads -------------------------------------------------------------------------

    async def get(self, who: Principal, bundle_id: str) -> BundleRecord:
        record = await self._repo.get(who.org_id, bundle_id)
        if record is None:
            raise not_found()
        return record

    async def list(self, who: Principal, page: PageRequest) -> BundlePage:
        rows = await self._repo.list_page(who.org_id, page.size + 1, page.after_created())
        items, token = page.page_by_created(rows, lambda b: (b.created_at, b.id))
        return BundlePage(items, token)


def _check_digest(archive: Path, header: UploadHeader) -> None:
    size = archive.stat().st_size
    if size != header.size:
        raise BundleRejected("BUNDLE_SIZE_MISMATCH", f"the object holds {size} bytes, declared {header.size}")
    digest = hashlib.sha256()
    with archive.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    if digest.hexdigest() != header.sha256:
        raise BundleRejected("BUNDLE_HASH_MISMATCH", "the object's sha256 differs from the declared one")
