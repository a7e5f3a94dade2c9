"""Typed client for the Query Service over the generated stubs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import pyarrow as pa

from trace_platform.clients.errors import call, from_rpc_error
from trace_platform.core.metadata import AUTHORIZATION, TASK_CAPABILITY
from trace_platform.gen.trace.v1 import common_pb2, query_pb2, query_pb2_grpc

pb = query_pb2


@dataclass(frozen=True)
class QueryRows:
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    rows: list[list[Any]]
    truncated: bool
    dataset_version: str = ""


def _value(v: common_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(v, kind)


def _rows(columns: Any, rows: Any, truncated: bool, version: str = "") -> QueryRows:
    return QueryRows(
        columns=[(c.name, c.type) for c in columns],
        rows=[[_value(v) for v in r.values] for r in rows],
        truncated=truncated,
        dataset_version=version,
    )


class QueryClient:
    def __init__(self, channel: grpc.aio.Channel, *, user_token: str | None = None) -> None:
        self._stub = query_pb2_grpc.QueryServiceStub(channel)
        self._user_md = ((AUTHORIZATION, f"Bearer {user_token}"),) if user_token else ()

    async def task_query(
        self, capability: str, task_id: str, attempt: int, dataset_uuid: str, sql: str, limit: int = 0
    ) -> QueryRows:
        req = pb.TaskQueryRequest(task_id=task_id, attempt=attempt, dataset_uuid=dataset_uuid, sql=sql, limit=limit)
        resp = await call(self._stub.TaskQuery(req, metadata=((TASK_CAPABILITY, capability),)))
        return _rows(resp.columns, resp.rows, resp.truncated)

    async def query(self, dataset: str, sql: str, limit: int = 0, timeout: float | None = None) -> QueryRows:
        req = pb.QueryRequest(dataset=dataset, sql=sql, limit=limit)
        resp = await call(self._stub.Query(req, metadata=self._user_md, timeout=timeout))
        return _rows(resp.columns, resp.rows, resp.truncated, resp.dataset_version)

    async def query_arrow(self, dataset: str, sql: str, timeout: float | None = None) -> pa.Table:
        """The whole result as an Arrow table, streamed in record batches."""
        req = pb.QueryArrowRequest(dataset=dataset, sql=sql)
        stream = self._stub.QueryArrow(req, metadata=self._user_md, timeout=timeout)
        parts: list[bytes] = []
        try:
            async for chunk in stream:
                parts.append(chunk.arrow_ipc)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        table: pa.Table = pa.ipc.open_stream(b"".join(parts)).read_all()
        return table
