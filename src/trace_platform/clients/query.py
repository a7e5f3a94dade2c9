"""Typed client of the internal Query Service (TaskQuery, a task's capability token).
Users query through ``clients.api.query.ApiQueryClient`` (the public API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from trace_platform.clients.errors import call
from trace_platform.core.metadata import TASK_CAPABILITY
from trace_platform.gen.trace.v1 import common_pb2, query_pb2, query_pb2_grpc

pb = query_pb2


@dataclass(frozen=True)
class QueryRows:
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    rows: list[list[Any]]
    truncated: bool
    versions: dict[str, str] = field(default_factory=dict)  # relation -> dataset version read


def _value(v: common_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(v, kind)


class QueryClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = query_pb2_grpc.QueryServiceStub(channel)

    async def task_query(
        self,
        capability: str,
        task_id: str,
        attempt: int,
        dataset_uuid: str | Mapping[str, str],
        sql: str,
        limit: int = 0,
    ) -> QueryRows:
        """``dataset_uuid``: one granted dataset (the relation ``dataset``), or a mapping of
        relation name to granted dataset UUID."""
        req = pb.TaskQueryRequest(task_id=task_id, attempt=attempt, sql=sql, limit=limit)
        if isinstance(dataset_uuid, str):
            req.dataset_uuid = dataset_uuid
        else:
            req.datasets.extend(pb.TaskQueryDataset(relation=r, dataset_uuid=d) for r, d in dataset_uuid.items())
        resp = await call(self._stub.TaskQuery(req, metadata=((TASK_CAPABILITY, capability),)))
        return QueryRows(
            columns=[(c.name, c.type) for c in resp.columns],
            rows=[[_value(v) for v in r.values] for r in resp.rows],
            truncated=resp.truncated,
            versions={r.relation: r.dataset_version for r in resp.relations},
        )
