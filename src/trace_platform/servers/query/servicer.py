"""gRPC handlers for the Query Service: read credentials and the deadline, call the service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc
from trace_platform.servers.common.auth import TASK_CAPABILITY, bearer_token, metadata_value
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.query.results import columns_pb
from trace_platform.servers.query.service import QueryService

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type hints)
pb = query_pb2
_NO_DEADLINE = float("inf")


def _deadline(context: Ctx) -> float:
    remaining = context.time_remaining()
    return _NO_DEADLINE if remaining is None else max(float(remaining), 0.001)


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    def __init__(self, service: QueryService) -> None:
        self._svc = service

    async def TaskQuery(self, request: pb.TaskQueryRequest, context: Ctx) -> pb.TaskQueryResponse:
        result = await self._svc.task_query(
            metadata_value(context, TASK_CAPABILITY),
            request.task_id,
            request.attempt,
            request.dataset_uuid,
            request.sql,
            request.limit,
            _deadline(context),
        )
        return pb.TaskQueryResponse(
            columns=columns_pb(result.columns), rows=result.rows, truncated=result.truncated
        )

    async def Query(self, request: pb.QueryRequest, context: Ctx) -> pb.QueryResponse:
        out = await self._svc.user_query(
            bearer_token(context), request.dataset, request.sql, request.limit, _deadline(context)
        )
        return pb.QueryResponse(
            columns=columns_pb(out.result.columns),
            rows=out.result.rows,
            truncated=out.result.truncated,
            dataset_version=out.dataset_version,
        )

    async def QueryArrow(self, request: pb.QueryArrowRequest, context: Ctx) -> AsyncIterator[pb.QueryArrowResponse]:
        stream = self._svc.user_query_arrow(bearer_token(context), request.dataset, request.sql, _deadline(context))
        # Closed here, not left to the garbage collector: a call that ends early (cancelled,
        # or a send refused) kills its query process and frees its slot at once.
        async with contextlib.aclosing(stream) as chunks:
            async for chunk in chunks:
                if chunk:
                    yield pb.QueryArrowResponse(arrow_ipc=chunk)


def query_binding(servicer: QueryServicer) -> ServiceBinding:
    return ServiceBinding(
        name=query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
        register=lambda server: query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server),
    )
