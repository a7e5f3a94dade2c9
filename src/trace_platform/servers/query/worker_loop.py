"""The request loop of a query process (``worker.py`` sets up the walls, then calls it).

One request at a time on a ``DatabasePool`` of this process's own (one granted database,
made and verified at start, and the pinned databases of recent version sets). The
address-space cap is set once the first database is hardened. A memory failure ends the
process after its answer, so the next request starts in a fresh one.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import duckdb

from trace_platform.adapters.duckdb.granted_fs import GrantedObject
from trace_platform.adapters.duckdb.hardened import DuckDBLimits, PinnedFiles, Views
from trace_platform.adapters.duckdb.pool import DatabasePool
from trace_platform.core.errors import ResourceExhausted, TraceError
from trace_platform.servers.query.execute import duckdb_error, send_arrow, send_rows
from trace_platform.servers.query.frames import Kind, encode_json, failure_frame, read_frame_sync
from trace_platform.servers.query.remote_reads import RemoteFiles
from trace_platform.servers.query.worker import size_bytes

MEMORY_LIMIT = "QUERY_MEMORY_LIMIT"


@dataclass(frozen=True)
class QueryRequest:
    sql: str
    objects: tuple[tuple[str, int], ...]  # (virtual path, size): read through the service
    pinned: PinnedFiles | None
    max_bytes: int
    limit: int = 0  # rows mode: the row cap
    arrow_batch_rows: int = 0  # Arrow mode when > 0
    views: Views = ()  # the relations over ``objects`` (empty: one, ``dataset``)


class AnswerFrames:
    """The frames of one answer, written to the pipe in as few writes as possible: a
    point lookup's COLUMNS, ROWS and DONE leave together in one write, so the service
    wakes once for them instead of once per frame. Buffered frames leave once
    ``FLUSH_BYTES`` are held (a large answer still streams, and the service checks its
    cap as it reads) and at the end of every answer (``flush``). Object reads write their
    requests straight to the pipe, under the same lock; answer frames held back meanwhile
    need no reply, so nothing waits on them."""

    FLUSH_BYTES = 64 << 10

    def __init__(self, write: Callable[[bytes], None], lock: threading.Lock) -> None:
        self._write = write
        self._lock = lock
        self._held: list[bytes] = []
        self._size = 0

    def send(self, data: bytes) -> None:
        self._held.append(data)
        self._size += len(data)
        if self._size >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._size = 0
            with self._lock:
                self._write(data)


def serve(config: dict[str, Any], stdin: BinaryIO, out: BinaryIO, mapped_bytes: Callable[[], int]) -> None:
    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    lock = threading.Lock()  # the pipe is shared by the answer and the object reads
    remote = RemoteFiles(stdin, write, lock)
    frames = AnswerFrames(write, lock)

    def send(data: bytes) -> None:
        frames.send(data)
        frames.flush()

    async def run() -> None:
        limits = DuckDBLimits(config["memory_limit"], config["threads"], config["temp_limit"])
        pool = DatabasePool(Path(config["work_dir"]), limits, 1, 0, 0.0, pinned_idle=config["pinned_idle"])
        try:
            await pool.start()
        except Exception as exc:  # e.g. HardeningFailed: the service refuses to start
            send(failure_frame(exc, str(exc)[:300]))
            return
        cap = mapped_bytes() + size_bytes(config["memory_limit"]) + size_bytes(config["headroom"])
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # from here on, text may quote SQL or data
        send(encode_json(Kind.READY, {"address_space": cap}))
        try:
            while (frame := read_frame_sync(stdin)) is not None:
                try:
                    keep = await _answer(pool, pickle.loads(frame[1]), remote, frames)
                finally:
                    frames.flush()
                if not keep:
                    break
        finally:
            await pool.close()

    asyncio.run(run())
    sys.exit(0)


async def _answer(pool: DatabasePool, request: QueryRequest, remote: RemoteFiles, frames: AnswerFrames) -> bool:
    """Answer one request; False when this process must end after it (memory). The answer
    is flushed as soon as it is complete: closing the connection and releasing the database
    (a spill check) follow while the service reads it, and the next request waits in the pipe."""
    objects = tuple(GrantedObject(path, remote, path, size) for path, size in request.objects)
    send = frames.send
    answered = False
    try:
        async with pool.database(request.pinned) as db:
            with db.session(objects) as conn:
                try:
                    if request.arrow_batch_rows > 0:
                        rows = request.arrow_batch_rows
                        send_arrow(db, conn, objects, request.sql, rows, request.max_bytes, send, request.views)
                    else:
                        limit, cap = request.limit, request.max_bytes
                        send_rows(db, conn, objects, request.sql, limit, cap, send, request.views)
                except duckdb.Error as exc:
                    raise duckdb_error(exc, db.storage_failure()) from None
                frames.flush()
                answered = True
    except MemoryError:
        failure: TraceError = ResourceExhausted(MEMORY_LIMIT, "query exceeded the memory limit")
    except TraceError as exc:
        failure = exc
    except Exception as exc:
        if answered:
            return True
        send(failure_frame(exc))
        return False
    else:
        return True
    if answered:  # releasing failed after DONE left: the service counts this process idle, no frame may follow
        return True
    send(failure_frame(failure))
    return failure.reason != MEMORY_LIMIT
