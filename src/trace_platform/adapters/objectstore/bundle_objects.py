"""The bundle store: where the BundleService stages uploads and publishes verified
bundles, behind one small interface with a local-directory and an S3 flavour.

The service never verifies an object in place: it copies it into a private temporary
file (``fetch``), checks that file, and publishes that same file (``publish``), so what
was checked is what the invoker later fetches, whatever happens to the staged object
meanwhile. Methods block; the service calls them in a thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from trace_platform.adapters.objectstore.stores import make_private_dirs
from trace_platform.core.config import ObjectStoreSettings, Settings
from trace_platform.core.errors import FailedPrecondition, NotFound, PermissionDenied, ResourceExhausted, Unavailable
from trace_platform.core.storage_paths import is_under

CHUNK = 1024 * 1024


class StagedObjectMissing(NotFound):
    def __init__(self) -> None:
        super().__init__("BUNDLE_NOT_UPLOADED", "no object has been uploaded for this bundle yet")


class TooLarge(ResourceExhausted):
    def __init__(self) -> None:
        super().__init__("BUNDLE_TOO_LARGE", "the uploaded object is larger than allowed")


class BundleObjects(Protocol):
    presigned_uploads: bool  # True: CreateUpload can hand out a pre-signed PUT URL

    def presign_put(self, uri: str, expires_seconds: int) -> str: ...

    def runnable_url(self, uri: str, expires_seconds: int) -> str:
        """The URL an invoker fetches a published bundle by: ``file://`` as it is (the
        Lite invoker reads it under its bundle roots), a pre-signed GET for S3 (a Lambda
        runner holds no store credentials)."""
        ...

    def fetch(self, uri: str, dest: Path, max_bytes: int) -> int:
        """Copy the object into the new file ``dest``; its size. ``TooLarge`` past
        ``max_bytes`` (nothing more is read), ``StagedObjectMissing`` when absent."""
        ...

    def publish(self, src: Path, uri: str) -> None:
        """Write ``src`` whole at ``uri`` (readers never see part of it)."""
        ...

    def delete(self, uri: str) -> None:
        """Remove the object; a missing one is not an error."""
        ...


def bundles_uri(settings: Settings) -> str:
    """Where bundles are stored (default ``<data dir>/bundles``, the invoker's default root)."""
    return (settings.bundles.uri or f"file://{settings.data_dir / 'bundles'}").rstrip("/")


def bundle_objects(settings: Settings) -> BundleObjects:
    root = bundles_uri(settings)
    if root.startswith("s3://"):
        return S3BundleObjects(settings.object_store)
    return LocalBundleObjects(Path(urlsplit(root).path), Path(urlsplit(root).path + "-staging"))


def _copy_capped(src: object, dest: Path, max_bytes: int) -> int:
    copied = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):  # type: ignore[attr-defined]
            copied += len(chunk)
            if copied > max_bytes:
                raise TooLarge()
            out.write(chunk)
    return copied


class LocalBundleObjects:
    """``file://`` objects confined to the bundle root and its staging sibling; files
    0600 in 0700 directories (readable by the platform alone)."""

    presigned_uploads = False

    def __init__(self, root: Path, staging: Path) -> None:
        self._roots = tuple(f"file://{p.resolve()}/" for p in (root, staging))

    def _path(self, uri: str) -> Path:
        if not any(is_under(uri, r) for r in self._roots):
            raise PermissionDenied("STORAGE_NOT_ALLOWED", "location is outside the bundle store")
        return Path(urlsplit(uri).path)

    def presign_put(self, uri: str, expires_seconds: int) -> str:
        raise FailedPrecondition(
            "BUNDLE_UPLOAD_URL_UNSUPPORTED",
            "the bundle store is a local directory: upload through the streaming Upload RPC",
        )

    def runnable_url(self, uri: str, expires_seconds: int) -> str:
        self._path(uri)  # confined to the store
        return uri

    def fetch(self, uri: str, dest: Path, max_bytes: int) -> int:
        try:
            with self._path(uri).open("rb") as src:
                return _copy_capped(src, dest, max_bytes)
        except (FileNotFoundError, IsADirectoryError):
            raise StagedObjectMissing() from None

    def publish(self, src: Path, uri: str) -> None:
        path = self._path(uri)
        try:
            make_private_dirs(path.parent)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o600)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError:
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "bundle store not writable") from None

    def delete(self, uri: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(uri).unlink()


class S3BundleObjects:
    """``s3://bucket/key`` objects through one botocore client (thread-safe; signing a
    PUT URL is local, no request). Not pyarrow's filesystem: deleting a staged object
    there leaves a directory marker behind."""

    presigned_uploads = True

    def __init__(self, settings: ObjectStoreSettings, client: Any = None) -> None:
        self._client = client or _s3_client(settings)

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise PermissionDenied("STORAGE_NOT_ALLOWED", "not an s3 object location")
        return parts.netloc, parts.path.lstrip("/")

    def presign_put(self, uri: str, expires_seconds: int) -> str:
        bucket, key = self._split(uri)
        url: str = self._client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
        )
        return url

    def runnable_url(self, uri: str, expires_seconds: int) -> str:
        """A pre-signed GET: what a runner with no store credentials fetches (Lambda)."""
        bucket, key = self._split(uri)
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_seconds
        )
        return url

    def fetch(self, uri: str, dest: Path, max_bytes: int) -> int:
        bucket, key = self._split(uri)
        try:
            resp = self._client.get_object(Bucket=bucket, Key=key)
            if int(resp.get("ContentLength", 0)) > max_bytes:
                resp["Body"].close()
                raise TooLarge()
            with contextlib.closing(resp["Body"]) as body:
                return _copy_capped(body, dest, max_bytes)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise StagedObjectMissing() from None
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store refused the read") from None
        except BotoCoreError:
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store unreachable") from None

    def publish(self, src: Path, uri: str) -> None:
        bucket, key = self._split(uri)
        try:
            with src.open("rb") as fh:
                self._client.put_object(Bucket=bucket, Key=key, Body=fh)
        except (ClientError, BotoCoreError):
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store refused the write") from None

    def delete(self, uri: str) -> None:
        bucket, key = self._split(uri)
        try:
            self._client.delete_object(Bucket=bucket, Key=key)  # a missing key is no error in S3
        except (ClientError, BotoCoreError):
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store refused the delete") from None


def _s3_client(s: ObjectStoreSettings) -> Any:
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3",
        region_name=s.s3_region,
        endpoint_url=s.s3_endpoint_url,
        aws_access_key_id=s.s3_access_key_id,
        aws_secret_access_key=s.s3_secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"} if s.s3_endpoint_url else {},
            connect_timeout=s.connect_timeout_seconds,
            read_timeout=s.connect_timeout_seconds * 6,
            retries={"mode": "standard", "max_attempts": 2},
        ),
    )
