"""Typed client for the Query Service over the generated stubs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from trace_platform.clients.errors import call, from_rpc_error
from trace_platform.core.metadata import AUTHORIZATION, TASK_CAPABILITY
from trace_platform.gen.trace.v1 import common_pb2, query_pb2, query_pb2_grpc

if TYPE_CHECKING:  # pyarrow is imported by the Arrow calls only: `trace query` starts fast
    import pyarrow as pa

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
        import pyarrow as pa

        batches = [b async for b in self.query_arrow_batches(dataset, sql, timeout)]
        return pa.Table.from_batches(batches)

    async def query_arrow_batches(
        self, dataset: str, sql: str, timeout: float | None = None
    ) -> AsyncGenerator[pa.RecordBatch, None]:
        """The result's record batches as they arrive (no row cap, nothing held beyond one
        message). At least one batch, an empty one for an empty result, so the consumer
        always learns the schema. Closing the iterator early cancels the RPC."""
        from trace_platform.clients.arrow_stream import IpcStreamDecoder

        req = pb.QueryArrowRequest(dataset=dataset, sql=sql)
        stream = self._stub.QueryArrow(req, metadata=self._user_md, timeout=timeout)
        decoder = IpcStreamDecoder()
        sent = 0
        try:
            async for chunk in stream:
                for batch in decoder.feed(chunk.arrow_ipc):
                    sent += 1
                    yield batch
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            with contextlib.suppress(Exception):
                stream.cancel()
        schema = decoder.finish()
        if not sent:
            import pyarrow as pa

            yield pa.RecordBatch.from_pylist([], schema=schema)
