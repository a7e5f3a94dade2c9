"""Running gated SQL on a hardened DuckDB connection, bounded in rows and time.

Queries run on a dedicated thread pool (DuckDB releases the GIL while it works). On
a deadline or a cancelled call the connection is interrupted and the thread awaited,
so a slot is never handed back while a query still runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb

from trace_platform.adapters.duckdb.granted_fs import CORRUPT, MISSING, UNAVAILABLE, GrantedFileSystem, GrantedObject
from trace_platform.core.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    TraceError,
    Unavailable,
)

RELATION = "dataset"
T = TypeVar("T")


@dataclass(frozen=True)
class LimitedResult:
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type)
    rows: list[tuple[Any, ...]]
    truncated: bool


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def attach_relation(conn: duckdb.DuckDBPyConnection, objects: Sequence[GrantedObject]) -> None:
    """Expose the granted objects as the relation ``dataset``: a temporary view, private to
    this connection, over DuckDB's own Parquet reader (trusted code writes the paths)."""
    paths = ", ".join(_quote(o.virtual_path) for o in objects)
    conn.execute(f"CREATE TEMP VIEW {RELATION} AS SELECT * FROM read_parquet([{paths}], hive_partitioning = false)")


def open_query(conn: duckdb.DuckDBPyConnection, objects: Sequence[GrantedObject], sql: str) -> duckdb.DuckDBPyRelation:
    """The gated query as a relation (for streaming its result as Arrow batches)."""
    attach_relation(conn, objects)
    rel = conn.sql(sql)
    if rel is None:  # only a non-query statement has no relation; the gate lets none through
        raise InvalidArgument("NOT_A_SELECT", "only read-only SELECT queries are allowed")
    return rel


def run_limited(
    conn: duckdb.DuckDBPyConnection, objects: Sequence[GrantedObject], sql: str, limit: int
) -> LimitedResult:
    """At most ``limit`` rows; fetches one more to know whether it clipped, and no further.
    Rows come back as Python values (no Arrow detour: ~2 ms less for small answers)."""
    attach_relation(conn, objects)
    result = conn.execute(sql)
    if result.description is None:
        raise InvalidArgument("NOT_A_SELECT", "only read-only SELECT queries are allowed")
    columns = tuple((str(d[0]), str(d[1])) for d in result.description)
    rows = result.fetchmany(limit + 1)
    return LimitedResult(columns, rows[:limit], len(rows) > limit)


class QueryRunner:
    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="duckdb")

    async def run(
        self, conn: duckdb.DuckDBPyConnection, fn: Callable[[], T], timeout: float, files: GrantedFileSystem
    ) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            await _interrupt(conn, future)
            raise DeadlineExceeded("QUERY_TIMEOUT", f"query exceeded {timeout:g} s") from None
        except asyncio.CancelledError:
            await _interrupt(conn, future)
            raise
        except duckdb.Error as exc:
            raise duckdb_error(exc, files.failure) from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


async def _interrupt(conn: duckdb.DuckDBPyConnection, future: asyncio.Future[T]) -> None:
    conn.interrupt()
    with contextlib.suppress(BaseException):
        await future


_LINE_CONTEXT = re.compile(r"\n.*", re.DOTALL)


_STORAGE_ERRORS: dict[str, TraceError] = {
    MISSING: FailedPrecondition("DATASET_OBJECT_MISSING", "an object named by the manifest is missing"),
    CORRUPT: FailedPrecondition("DATASET_OBJECT_INVALID", "an object differs from its manifest entry"),
    UNAVAILABLE: Unavailable("OBJECT_STORE_UNAVAILABLE", "reading the dataset failed"),
}


def duckdb_error(exc: duckdb.Error, storage_failure: str | None = None) -> TraceError:
    """Map a DuckDB error to a reason code. The message goes back to the caller who sent the
    SQL (first line only, bounded; DuckDB's LINE context, which quotes the SQL, is cut) and
    is never logged."""
    if storage_failure in _STORAGE_ERRORS:
        template = _STORAGE_ERRORS[storage_failure]
        return type(template)(template.reason, template.message)
    detail = _LINE_CONTEXT.sub("", str(exc))[:300]
    if isinstance(exc, duckdb.InterruptException):
        return DeadlineExceeded("QUERY_TIMEOUT", "query interrupted")
    if isinstance(exc, duckdb.OutOfMemoryException):
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
