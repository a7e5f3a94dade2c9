"""Typed async client of the public QueryService (``trace.api.v1``): SQL over the caller's
org's published datasets, each attached under a relation name.

``datasets`` is a registry name (attached as the relation ``dataset``) or a mapping of
relation name to registry name, for example ``{"txs": "mainnet.transactions", "logs":
"mainnet.logs"}`` (the SQL reads ``txs`` and ``logs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from trace_platform.clients.errors import call, from_rpc_error
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.gen.trace.api.v1 import query_pb2 as pb
from trace_platform.gen.trace.api.v1 import query_pb2_grpc

if TYPE_CHECKING:  # pyarrow is imported by the Arrow calls only: `trace query` starts fast
    import pyarrow as pa

Datasets = str | Mapping[str, str]


@dataclass(frozen=True)
class RelationVersion:
    relation: str
    dataset: str  # registry name
    dataset_version: str


@dataclass(frozen=True)
class QueryRows:
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    rows: list[list[Any]]
    truncated: bool
    relations: list[RelationVersion] = field(default_factory=list)

    @property
    def versions(self) -> dict[str, str]:
        """Relation name -> the dataset version it read."""
        return {r.relation: r.dataset_version for r in self.relations}

    @property
    def dataset_version(self) -> str:
        """The version of the relation ``dataset`` (a one-dataset query), else empty."""
        return self.versions.get("dataset", "")


def _value(v: pb.QueryValue) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(v, kind)


def _relations(items: Any) -> list[RelationVersion]:
    return [RelationVersion(r.relation, r.dataset, r.dataset_version) for r in items]


def _datasets(datasets: Datasets) -> dict[str, Any]:
    """The request fields naming ``datasets`` (the server checks the names)."""
    if isinstance(datasets, str):
        return {"dataset": datasets}
    return {"datasets": [pb.QueryDataset(relation=rel, name=name) for rel, name in datasets.items()]}


class ApiQueryClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str | None = None) -> None:
        self._stub = query_pb2_grpc.QueryServiceStub(channel)
        self._md = ((AUTHORIZATION, f"Bearer {token}"),) if token else ()

    async def query(self, datasets: Datasets, sql: str, limit: int = 0, timeout: float | None = None) -> QueryRows:
        """At most ``limit`` rows (0: the server's default of 1000; at most 10000)."""
        req = pb.QueryRequest(sql=sql, limit=limit, **_datasets(datasets))
        resp = await call(self._stub.Query(req, metadata=self._md, timeout=timeout))
        return QueryRows(
            columns=[(c.name, c.type) for c in resp.columns],
            rows=[[_value(v) for v in r.values] for r in resp.rows],
            truncated=resp.truncated,
            relations=_relations(resp.relations),
        )

    async def query_arrow(self, datasets: Datasets, sql: str, timeout: float | None = None) -> pa.Table:
        """The whole result as an Arrow table, streamed in record batches."""
        import pyarrow as pa

        batches = [b async for b in self.query_arrow_batches(datasets, sql, timeout)]
        return pa.Table.from_batches(batches)

    async def query_arrow_batches(
        self, datasets: Datasets, sql: str, timeout: float | None = None, versions: list[RelationVersion] | None = None
    ) -> AsyncGenerator[pa.RecordBatch, None]:
        """The result's record batches as they arrive (no row cap, nothing held beyond one
        message). At least one batch, an empty one for an empty result, so the consumer
        always learns the schema. ``versions``, when given, receives what each relation
        read. Closing the iterator early cancels the RPC."""
        from trace_platform.clients.arrow_stream import IpcStreamDecoder

        req = pb.QueryArrowRequest(sql=sql, **_datasets(datasets))
        stream = self._stub.QueryArrow(req, metadata=self._md, timeout=timeout)
        decoder = IpcStreamDecoder()
        sent = 0
        try:
            async for chunk in stream:
                if versions is not None:
                    versions.extend(_relations(chunk.relations))
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
