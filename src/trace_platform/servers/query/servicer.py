"""gRPC handlers for the Query Service: read credentials and the deadline, call the service.

Two services on the same logic: ``trace.v1.QueryService`` (TaskQuery, internal, a task's
capability token) and ``trace.api.v1.QueryService`` (Query and QueryArrow, the public API,
a user's Bearer JWT checked by the ``UserAuthenticator``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from trace_platform.gen.trace.api.v1 import query_pb2 as api_pb
from trace_platform.gen.trace.api.v1 import query_pb2_grpc as api_grpc
from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.common.auth import TASK_CAPABILITY, metadata_value
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.query.results import columns_pb
from trace_platform.servers.query.service import QueryService, RelationRead

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
        pairs = [(d.relation, d.dataset_uuid) for d in request.datasets]
        out = await self._svc.task_query(
            metadata_value(context, TASK_CAPABILITY),
            request.task_id,
            request.attempt,
            pairs,
            request.sql,
            request.limit,
            _deadline(context),
            request.dataset_uuid,
        )
        return pb.TaskQueryResponse(
            columns=columns_pb(out.result.columns),
            rows=out.result.rows,
            truncated=out.result.truncated,
            relations=[
                pb.RelationVersion(relation=r.relation, dataset_uuid=r.dataset_uuid, dataset_version=r.dataset_version)
                for r in out.relations
            ],
        )


def _relations_pb(reads: tuple[RelationRead, ...]) -> list[api_pb.QueryRelationVersion]:
    return [
        api_pb.QueryRelationVersion(relation=r.relation, dataset=r.dataset, dataset_version=r.dataset_version)
        for r in reads
    ]


class ApiQueryServicer(api_grpc.QueryServiceServicer):
    def __init__(self, service: QueryService, authenticator: UserAuthenticator) -> None:
        self._svc = service
        self._auth = authenticator

    async def Query(self, request: api_pb.QueryRequest, context: Ctx) -> api_pb.QueryResponse:
        pairs = [(d.relation, d.name) for d in request.datasets]
        out = await self._svc.user_query(
            functools.partial(self._auth.authenticate, context),
            pairs,
            request.sql,
            request.limit,
            _deadline(context),
            request.dataset,
        )
        # The public messages keep the internal rows' wire layout (fields 1-3): one copy of
        # bytes, no conversion per value.
        internal = pb.TaskQueryResponse(
            columns=columns_pb(out.result.columns), rows=out.result.rows, truncated=out.result.truncated
        )
        response = api_pb.QueryResponse.FromString(internal.SerializeToString())
        response.relations.extend(_relations_pb(out.relations))
        return response

    async def QueryArrow(
        self, request: api_pb.QueryArrowRequest, context: Ctx
    ) -> AsyncIterator[api_pb.QueryArrowResponse]:
        pairs = [(d.relation, d.name) for d in request.datasets]
        stream = self._svc.user_query_arrow(
            functools.partial(self._auth.authenticate, context),
            pairs,
            request.sql,
            _deadline(context),
            request.dataset,
        )
        relations: list[api_pb.QueryRelationVersion] = []
        # Closed here, not left to the garbage collector: a call that ends early (cancelled,
        # or a send refused) kills its query process and frees its slot at once.
        async with contextlib.aclosing(stream) as parts:
            async for part in parts:
                if isinstance(part, tuple):
                    relations = _relations_pb(part)  # sent with the first chunk
                elif part:
                    yield api_pb.QueryArrowResponse(arrow_ipc=part, relations=relations)
                    relations = []


def query_binding(servicer: QueryServicer) -> ServiceBinding:
    return ServiceBinding(
        name=query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name,
        register=lambda server: query_pb2_grpc.add_QueryServiceServicer_to_server(servicer, server),
    )


def api_query_binding(servicer: ApiQueryServicer) -> ServiceBinding:
    return ServiceBinding(
        name=api_pb.DESCRIPTOR.services_by_name["QueryService"].full_name,
        register=lambda server: api_grpc.add_QueryServiceServicer_to_server(servicer, server),
    )
