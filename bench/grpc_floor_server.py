"""The floor for `query_overhead.py`: the least a TaskQuery can cost on this machine.

A grpc.aio server on uvloop (the stack Trace's services run on) whose TaskQuery runs the
request's SQL on a cursor of one plain DuckDB database (a view `dataset` over the files,
2 threads, Parquet metadata cached, as Trace's hardened databases) in a thread pool, and
answers with the same typed rows. No token, gate, grant, hardening, pool or audit: what
Trace adds over this is what Trace itself costs.

    python bench/grpc_floor_server.py FILE [FILE ...]   # prints "serving on HOST:PORT" on stderr
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import grpc
import uvloop

from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc
from trace_platform.servers.query.results import columns_pb, rows_pb


class FloorQueryService(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, files: list[str]) -> None:
        self._db = duckdb.connect(config={"threads": 2})
        self._db.execute("SET parquet_metadata_cache = true")
        listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        self._db.execute(f"CREATE VIEW dataset AS SELECT * FROM read_parquet([{listed}])")
        self._threads = ThreadPoolExecutor(4)

    def _run(self, sql: str) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
        cursor = self._db.cursor()
        try:
            result = cursor.execute(sql)
            columns = [(str(d[0]), str(d[1])) for d in result.description]
            return columns, result.fetchall()
        finally:
            cursor.close()

    async def TaskQuery(self, request: query_pb2.TaskQueryRequest, context: Any) -> query_pb2.TaskQueryResponse:
        loop = asyncio.get_running_loop()
        columns, rows = await loop.run_in_executor(self._threads, self._run, request.sql)
        return query_pb2.TaskQueryResponse(columns=columns_pb(columns), rows=rows_pb(rows))


def start_floor_server(files: Sequence[Path]) -> tuple[subprocess.Popen[str], str]:
    """This server in a process of its own; returns the process and its address."""
    cmd = [sys.executable, __file__, *map(str, files)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    if not line.startswith("serving on "):
        proc.kill()
        raise RuntimeError("the floor server did not start")
    return proc, line.split()[-1]


@contextlib.asynccontextmanager
async def floor_channel(files: Sequence[Path]) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to this server over ``files``, in its own process for the block."""
    proc, addr = start_floor_server(files)
    try:
        async with grpc.aio.insecure_channel(addr) as channel:
            yield channel
    finally:
        proc.terminate()
        proc.wait(10)


async def serve(files: list[str]) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    query_pb2_grpc.add_QueryServiceServicer_to_server(FloorQueryService(files), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1:]))
