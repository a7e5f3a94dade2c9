"""The only filesystem a hardened DuckDB can reach: ``trace:///`` paths that map to the
objects granted to the request currently holding the database, nothing else.

DuckDB scans Parquet natively through it (ranged reads, projection and row-group
pruning intact) while ``LocalFileSystem`` stays disabled and external access stays off
except for the ``trace:///`` prefix. Each object is read through its store's pyarrow
filesystem with positional reads (``read_at``), because DuckDB's threads share one
handle and a shared seek position would race.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow.fs as pafs
from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

PROTOCOL = "trace"
PREFIX = f"{PROTOCOL}:///"


class Source(Protocol):
    """What is read of an open object (a ``pyarrow.NativeFile`` is one)."""

    def size(self) -> int: ...
    def read_at(self, nbytes: int, offset: int) -> bytes: ...
    def close(self) -> None: ...


class Opener(Protocol):
    """Where objects are opened (a ``pyarrow.fs.FileSystem`` is one)."""

    def open_input_file(self, path: str) -> Source: ...


@dataclass(frozen=True)
class GrantedObject:
    """A Parquet object as DuckDB sees it (``virtual_path``) and where it really lives."""

    virtual_path: str  # trace:///...
    filesystem: pafs.FileSystem | Opener
    path: str
    size: int


def _key(path: str) -> str:
    path = str(path)
    if path.startswith(PREFIX):
        return path[len(PREFIX) :]
    if path.startswith(f"{PROTOCOL}://"):
        return path[len(PROTOCOL) + 3 :].lstrip("/")
    return path.lstrip("/")


MAX_OPEN_SOURCES = 256
MISSING = "missing"
UNAVAILABLE = "unavailable"
CORRUPT = "corrupt"


class _RangeReader(io.RawIOBase):
    def __init__(self, source: Source, size: int, on_failure: Callable[[str], None]) -> None:
        self._source = source
        self._size = size
        self._pos = threading.local()
        self._on_failure = on_failure

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(getattr(self._pos, "value", 0))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self._size}[whence]
        self._pos.value = base + offset
        return int(self._pos.value)

    def read(self, size: int | None = -1) -> bytes:
        pos = self.tell()
        if size is None or size < 0:
            size = self._size - pos
        try:
            data: bytes = self._source.read_at(size, pos)
        except OSError:
            self._on_failure(UNAVAILABLE)
            raise
        self._pos.value = pos + len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        # The source is shared (see GrantedFileSystem._source); only this view closes.
        super().close()


class GrantedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    protocol = PROTOCOL
    cachable = False  # fsspec would otherwise hand every database the same instance
    root_marker = ""

    def __init__(self) -> None:
        super().__init__()
        self._granted: dict[str, GrantedObject] = {}
        self._sources: OrderedDict[str, Source] = OrderedDict()
        # Why a read failed, for the error the caller gets (DuckDB only passes on text).
        self.failure: str | None = None

    def _fail(self, failure: str) -> None:
        self.failure = self.failure or failure

    @contextmanager
    def grant(self, objects: Sequence[GrantedObject]) -> Iterator[None]:
        """Make ``objects`` readable for the duration of one request."""
        self._granted = {_key(o.virtual_path): o for o in objects}
        self.failure = None
        try:
            yield
        finally:
            self._granted = {}

    def _object(self, path: str) -> GrantedObject:
        obj = self._granted.get(_key(path))
        if obj is None:
            raise PermissionError("not a granted object")
        return obj

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> io.RawIOBase:
        if mode != "rb":
            raise PermissionError("read only")
        obj = self._object(path)
        return _RangeReader(self._source(obj), obj.size, self._fail)

    def _source(self, obj: GrantedObject) -> Source:
        """An open handle, kept across requests: objects of a version never change, and
        positional reads make one handle safe to share between DuckDB's threads."""
        source = self._sources.get(obj.virtual_path)
        if source is not None:
            self._sources.move_to_end(obj.virtual_path)
            return source
        try:
            source = obj.filesystem.open_input_file(obj.path)
        except FileNotFoundError:
            self._fail(MISSING)
            raise
        except OSError:
            self._fail(UNAVAILABLE)
            raise
        if source.size() != obj.size:
            source.close()
            self._fail(CORRUPT)
            raise OSError("object size differs from its manifest entry")
        self._sources[obj.virtual_path] = source
        while len(self._sources) > MAX_OPEN_SOURCES:
            self._sources.popitem(last=False)[1].close()
        return source

    def close_sources(self) -> None:
        while self._sources:
            self._sources.popitem()[1].close()

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        obj = self._granted.get(_key(path))
        if obj is None:
            raise FileNotFoundError(path)
        # Versions are immutable: a fixed mtime lets DuckDB cache Parquet metadata by path.
        return {"name": obj.virtual_path, "size": obj.size, "type": "file", "mtime": 0.0}

    def modified(self, path: str) -> dt.datetime:
        self._object(path)
        return dt.datetime.fromtimestamp(0, dt.UTC)

    def glob(self, path: str, **kwargs: Any) -> list[str]:
        return [self._granted[_key(path)].virtual_path] if _key(path) in self._granted else []

    def exists(self, path: str, **kwargs: Any) -> bool:
        return _key(path) in self._granted

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        raise PermissionError("listing is not allowed")

    def _rm(self, path: str) -> None:
        raise PermissionError("read only")

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        raise PermissionError("read only")
