"""Reads of granted objects (any store but plain local files), served by the service.

A query process never holds a store's filesystem or credentials: its ``GrantedFileSystem``
is given objects whose filesystem is ``RemoteFiles``, which asks the service over the
pipe (OPEN, READ) and waits for the answer (DATA, or IO_FAILED naming MISSING, CORRUPT or
UNAVAILABLE). The service answers only for objects granted to the request in hand, within
their size, so a subverted process can read nothing else. Ranged reads keep DuckDB's
projection and row-group pruning.

One read is in flight per process at a time (a lock around each round trip): the process
reads its stdin only between requests, so during one the pipe belongs to these replies.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import BinaryIO

import pyarrow as pa

from trace_platform.adapters.duckdb.granted_fs import CORRUPT, MISSING, UNAVAILABLE, GrantedObject
from trace_platform.servers.query.frames import Kind, encode, encode_json, read_frame_sync

_SIZE = struct.Struct(">Q")
MAX_READ = 256 << 20  # one ranged read (DuckDB asks for column chunks)
MAX_OPEN_SOURCES = 256


class RemoteFiles:
    """The worker's stand-in for a pyarrow filesystem: ``open_input_file`` and ``read_at``
    go to the service. Paths are the objects' virtual paths."""

    def __init__(self, stdin: BinaryIO, send: Callable[[bytes], None], lock: threading.Lock) -> None:
        self._stdin = stdin
        self._send = send
        self._lock = lock

    def _ask(self, frame: bytes) -> bytes:
        with self._lock:
            self._send(frame)
            reply = read_frame_sync(self._stdin)
        if reply is None:
            raise OSError("the service closed the pipe")
        kind, payload = reply
        if kind is Kind.DATA:
            return payload
        failure = json.loads(payload).get("failure") if kind is Kind.IO_FAILED else UNAVAILABLE
        if failure == MISSING:
            raise FileNotFoundError("object missing")
        raise OSError(f"read failed: {failure}")

    def open_input_file(self, path: str) -> RemoteFile:
        return RemoteFile(self, path, _SIZE.unpack(self._ask(encode_json(Kind.OPEN, {"path": path})))[0])

    def read(self, path: str, size: int, offset: int) -> bytes:
        return self._ask(encode_json(Kind.READ, {"path": path, "offset": offset, "size": size}))


class RemoteFile:
    def __init__(self, files: RemoteFiles, path: str, size: int) -> None:
        self._files = files
        self._path = path
        self._size = size

    def size(self) -> int:
        return self._size

    def read_at(self, nbytes: int, offset: int) -> bytes:
        return self._files.read(self._path, nbytes, offset)

    def close(self) -> None:
        pass


class ObjectReads:
    """The service side: OPEN and READ of the request's granted objects, through their
    stores' filesystems, with open handles kept across requests (objects never change)."""

    def __init__(self) -> None:
        self._sources: OrderedDict[str, pa.NativeFile] = OrderedDict()
        self._lock = threading.Lock()

    async def answer(self, kind: Kind, payload: bytes, granted: dict[str, GrantedObject]) -> bytes:
        try:
            ask = json.loads(payload)
            obj = granted.get(str(ask["path"]))
            if obj is None:  # not an object of this request
                return encode_json(Kind.IO_FAILED, {"failure": UNAVAILABLE})
            source = await asyncio.to_thread(self._source, obj)
            if source.size() != obj.size:  # never kept: the process's GrantedFileSystem says CORRUPT
                real = source.size()
                source.close()
                return encode(Kind.DATA, _SIZE.pack(real)) if kind is Kind.OPEN else _corrupt()
            if kind is Kind.OPEN:
                return encode(Kind.DATA, _SIZE.pack(obj.size))
            offset, size = int(ask["offset"]), int(ask["size"])
            if offset < 0 or size < 0 or offset > obj.size:
                return encode_json(Kind.IO_FAILED, {"failure": UNAVAILABLE})
            data: bytes = await asyncio.to_thread(source.read_at, min(size, MAX_READ, obj.size - offset), offset)
            return encode(Kind.DATA, data)
        except FileNotFoundError:
            return encode_json(Kind.IO_FAILED, {"failure": MISSING})
        except (OSError, ValueError, KeyError, TypeError):
            return encode_json(Kind.IO_FAILED, {"failure": UNAVAILABLE})

    def _source(self, obj: GrantedObject) -> pa.NativeFile:
        """An open handle; one whose size differs from the manifest is not kept."""
        with self._lock:  # called from worker threads of several requests at once
            source = self._sources.get(obj.virtual_path)
            if source is not None:
                self._sources.move_to_end(obj.virtual_path)
                return source
        source = obj.filesystem.open_input_file(obj.path)
        if source.size() == obj.size:
            with self._lock:
                self._sources[obj.virtual_path] = source
                # Beyond the cap the oldest handle is dropped, not closed: a read may hold it.
                while len(self._sources) > MAX_OPEN_SOURCES:
                    self._sources.popitem(last=False)
        return source

    def close(self) -> None:
        while self._sources:
            self._sources.popitem()[1].close()


def _corrupt() -> bytes:
    return encode_json(Kind.IO_FAILED, {"failure": CORRUPT})
