"""Object stores built on pyarrow filesystems: whole-object reads and writes for small
documents (manifests, batch artifacts) and the filesystem itself for scanning Parquet in
place. The local and S3 flavours differ only in how a URI maps to a path.

Local objects are written readable by the platform alone (0600 files in 0700
directories), whatever the process umask.

Errors: a missing object raises ``ObjectMissing``; a store that cannot be reached raises
``Unavailable`` (retryable); a location the store may not touch raises ``PermissionDenied``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from trace_platform.core.config import ObjectStoreSettings
from trace_platform.core.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from trace_platform.core.storage_paths import is_under, normalize_prefix


class ObjectMissing(NotFound):
    def __init__(self) -> None:
        super().__init__("OBJECT_NOT_FOUND", "object does not exist")


class ArrowObjectStore:
    scheme = ""

    def __init__(self, filesystem: pafs.FileSystem) -> None:
        self._fs = filesystem

    def arrow_filesystem(self) -> pafs.FileSystem:
        return self._fs

    def arrow_path(self, uri: str) -> str:
        raise NotImplementedError

    def local_path(self, uri: str) -> str | None:
        """The object's path on this machine's own filesystem, when DuckDB can read it
        natively (None: reads must go through ``arrow_filesystem``)."""
        return None

    def get_bytes(self, uri: str, max_bytes: int) -> bytes:
        path = self.arrow_path(uri)
        try:
            with self._fs.open_input_file(path) as fh:
                if fh.size() > max_bytes:
                    raise FailedPrecondition("OBJECT_TOO_LARGE", "object exceeds the size limit")
                data: bytes = fh.read()
                return data
        except FileNotFoundError:
            raise ObjectMissing() from None
        except OSError:
            # The message can name endpoints and keys; keep it out of the caller's error.
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store unreachable") from None

    def put_bytes(self, uri: str, data: bytes) -> None:
        path = self.arrow_path(uri)
        try:
            parent = path.rsplit("/", 1)[0]
            self._fs.create_dir(parent, recursive=True)
            with self._fs.open_output_stream(path) as fh:
                fh.write(data)
        except OSError:
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store unreachable") from None


class LocalObjectStore(ArrowObjectStore):
    """``file:///abs/path`` objects, confined to configured root directories."""

    scheme = "file"

    def __init__(self, roots: Sequence[Path], filesystem: pafs.FileSystem | None = None) -> None:
        super().__init__(filesystem or pafs.LocalFileSystem())
        self._roots = tuple(f"file://{Path(r).resolve()}/" for r in roots)

    def arrow_path(self, uri: str) -> str:
        if normalize_prefix(uri) is None or not any(is_under(uri, root) for root in self._roots):
            raise PermissionDenied("STORAGE_NOT_ALLOWED", "location is outside the store's roots")
        return urlsplit(uri).path

    def local_path(self, uri: str) -> str | None:
        # Only the plain local filesystem: a wrapped one (tests count bytes through one)
        # must see every read.
        return self.arrow_path(uri) if type(self._fs) is pafs.LocalFileSystem else None

    def put_bytes(self, uri: str, data: bytes) -> None:
        """Write readable by the platform alone, whatever the umask: each directory it
        creates is 0700 and the object 0600. The object appears whole (a temporary file
        in the same directory, renamed), so a reader never sees half of it."""
        path = Path(self.arrow_path(uri))
        try:
            make_private_dirs(path.parent)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError:
            raise Unavailable("OBJECT_STORE_UNAVAILABLE", "object store unreachable") from None


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and any missing parents with mode 0700 (``os.makedirs``
    gives intermediate directories the umask's default instead). Existing directories
    keep their modes."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue  # a concurrent writer made it
        os.chmod(d, 0o700)  # the umask may have removed bits, never added: make it exact


class S3ObjectStore(ArrowObjectStore):
    """``s3://bucket/key`` objects on any S3 API endpoint."""

    scheme = "s3"

    def __init__(self, settings: ObjectStoreSettings, filesystem: pafs.FileSystem | None = None) -> None:
        super().__init__(filesystem or s3_filesystem(settings))

    def arrow_path(self, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme != "s3" or not parts.netloc or normalize_prefix(uri) is None:
            raise PermissionDenied("STORAGE_NOT_ALLOWED", "not an s3 location")
        return f"{parts.netloc}{parts.path}"


def s3_filesystem(settings: ObjectStoreSettings) -> pafs.S3FileSystem:
    endpoint = settings.s3_endpoint_url
    kwargs: dict[str, object] = {}
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme or "https"
    return pafs.S3FileSystem(
        access_key=settings.s3_access_key_id,
        secret_key=settings.s3_secret_access_key,
        region=settings.s3_region,
        connect_timeout=settings.connect_timeout_seconds,
        request_timeout=settings.connect_timeout_seconds * 6,
        # One retry layer: callers (the Dispatcher for tasks, the user) decide to retry.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2),
        allow_bucket_creation=True,
        **kwargs,
    )


class ObjectStores:
    """Routes a URI to the store of its scheme; unknown schemes are refused."""

    def __init__(self, stores: Sequence[ArrowObjectStore]) -> None:
        self._by_scheme = {s.scheme: s for s in stores}

    def for_uri(self, uri: str) -> ArrowObjectStore:
        store = self._by_scheme.get(urlsplit(uri).scheme)
        if store is None:
            raise PermissionDenied("STORAGE_NOT_ALLOWED", "no object store for this location")
        return store
