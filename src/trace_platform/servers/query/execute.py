"""Running gated SQL on a hardened DuckDB connection, inside a query process, within the
row and message caps.

The answer leaves as frames (``frames.py``) while it is produced: rows in chunks of
serialized protobuf, QueryArrow's record batches as Arrow IPC bytes. The byte cap is
checked on every chunk, so an answer too large for one gRPC message is refused
(QUERY_RESULT_TOO_LARGE) once it crosses the cap, never materialised whole first; a
record batch too large for one message is split until it fits.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator, Sequence

import duckdb
import pyarrow as pa

from trace_platform.adapters.duckdb.granted_fs import GrantedObject
from trace_platform.adapters.duckdb.hardened import HardenedDatabase, Views, storage_error
from trace_platform.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    TraceError,
    Unavailable,
)
from trace_platform.gen.trace.v1 import query_pb2
from trace_platform.servers.query.frames import Kind, encode, encode_json
from trace_platform.servers.query.results import ArrowIpcChunks, rows_pb

Send = Callable[[bytes], None]
# Rows fetched from DuckDB per chunk: small enough that the byte cap trips early.
ROW_CHUNK = 512


def too_large(max_bytes: int) -> ResourceExhausted:
    return ResourceExhausted("QUERY_RESULT_TOO_LARGE", f"the answer exceeds {max_bytes} bytes")


def open_query(
    db: HardenedDatabase,
    conn: duckdb.DuckDBPyConnection,
    objects: Sequence[GrantedObject],
    sql: str,
    views: Views = (),
) -> duckdb.DuckDBPyRelation:
    """The gated query as a relation (for streaming its result as Arrow batches)."""
    db.expose(conn, objects, views)
    rel = conn.sql(sql)
    if rel is None:  # only a non-query statement has no relation; the gate lets none through
        raise InvalidArgument("NOT_A_SELECT", "only read-only SELECT queries are allowed")
    return rel


def send_rows(
    db: HardenedDatabase,
    conn: duckdb.DuckDBPyConnection,
    objects: Sequence[GrantedObject],
    sql: str,
    limit: int,
    max_bytes: int,
    send: Send,
    views: Views = (),
) -> None:
    """COLUMNS, ROWS chunks of at most ``limit`` rows in all, then DONE (truncated when a
    row beyond ``limit`` exists: one more is fetched to know, and no further). Rows come
    from DuckDB as Python values (no Arrow detour: ~2 ms less for small answers)."""
    db.expose(conn, objects, views)
    result = conn.execute(sql)
    if result.description is None:
        raise InvalidArgument("NOT_A_SELECT", "only read-only SELECT queries are allowed")
    send(encode_json(Kind.COLUMNS, [[str(d[0]), str(d[1])] for d in result.description]))
    sent = size = 0
    truncated = False
    while sent < limit + 1:
        rows = result.fetchmany(min(ROW_CHUNK, limit + 1 - sent))
        if not rows:
            break
        if sent + len(rows) > limit:
            rows, truncated = rows[: limit - sent], True
        chunk = query_pb2.TaskQueryResponse(rows=rows_pb(rows)).SerializeToString()
        size += len(chunk)
        if size > max_bytes:
            raise too_large(max_bytes)
        send(encode(Kind.ROWS, chunk))
        sent += len(rows)
    send(encode_json(Kind.DONE, {"truncated": truncated}))


def send_arrow(
    db: HardenedDatabase,
    conn: duckdb.DuckDBPyConnection,
    objects: Sequence[GrantedObject],
    sql: str,
    batch_rows: int,
    max_bytes: int,
    send: Send,
    views: Views = (),
) -> None:
    """ARROW frames, each one message of the QueryArrow stream (the first carries the
    schema, the last the end of stream), then DONE."""
    reader = open_query(db, conn, objects, sql, views).to_arrow_reader(batch_rows)
    chunks = ArrowIpcChunks(reader.schema)
    for batch in reader:
        for piece in _fitting(batch, max_bytes):
            send(encode(Kind.ARROW, _ROWS.pack(piece.num_rows) + chunks.batch(piece)))
    send(encode(Kind.ARROW, _ROWS.pack(0) + chunks.finish()))
    send(encode_json(Kind.DONE, {"truncated": False}))


_ROWS = struct.Struct(">Q")


def arrow_frame(payload: bytes) -> tuple[int, bytes]:
    """(rows, IPC bytes) of an ARROW frame."""
    if len(payload) < _ROWS.size:
        raise ValueError("short ARROW frame")
    return _ROWS.unpack_from(payload)[0], payload[_ROWS.size :]


def _fitting(batch: pa.RecordBatch, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """``batch`` in pieces that each fit one message; a single row too large is refused."""
    if pa.ipc.get_record_batch_size(batch) <= max_bytes:
        yield batch
    elif batch.num_rows <= 1:
        raise too_large(max_bytes)
    else:
        half = batch.num_rows // 2
        yield from _fitting(batch.slice(0, half), max_bytes)
        yield from _fitting(batch.slice(half), max_bytes)


_LINE_CONTEXT = re.compile(r"\n.*", re.DOTALL)


def duckdb_error(exc: duckdb.Error, storage_failure: str | None = None) -> TraceError:
    """Map a DuckDB error to a reason code. The message goes back to the caller who sent the
    SQL (first line only, bounded; DuckDB's LINE context, which quotes the SQL, is cut) and
    is never logged."""
    if storage_failure is not None:
        return storage_error(storage_failure)
    detail = _LINE_CONTEXT.sub("", str(exc))[:300]
    if isinstance(exc, duckdb.InterruptException):
        return DeadlineExceeded("QUERY_TIMEOUT", "query interrupted")
    if isinstance(exc, duckdb.OutOfMemoryException):
        if "max_temp_directory_size" in str(exc):
            return ResourceExhausted("QUERY_SPILL_LIMIT", "query exceeded the spill limit")
        return ResourceExhausted("QUERY_MEMORY_LIMIT", "query exceeded the memory limit")
    if isinstance(exc, duckdb.PermissionException):
        return InvalidArgument("QUERY_NOT_PERMITTED", "query attempted a forbidden operation")
    if isinstance(exc, duckdb.IOException | duckdb.HTTPException):
        return Unavailable("OBJECT_STORE_UNAVAILABLE", "reading the dataset failed")
    if isinstance(exc, duckdb.ConversionException | duckdb.OutOfRangeException):
        return InvalidArgument("QUERY_RUNTIME_ERROR", detail)
    if isinstance(exc, duckdb.BinderException | duckdb.CatalogException | duckdb.ParserException):
        return InvalidArgument("QUERY_INVALID", detail)
    return FailedPrecondition("QUERY_FAILED", detail)
