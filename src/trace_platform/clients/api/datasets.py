"""Typed async client of the DatasetService: list, get (with columns) and publish the
org's datasets. Results are the frozen dataclasses of ``core.dataset_registry``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

import grpc

from trace_platform.clients.api.pages import Page, every_item
from trace_platform.clients.errors import call
from trace_platform.core.dataset_registry import (
    ChainSyncStreamSource,
    DagOutputSource,
    DatasetColumn,
    DatasetInfo,
    PublishResult,
)
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.gen.trace.api.v1 import datasets_pb2 as pb
from trace_platform.gen.trace.api.v1 import datasets_pb2_grpc

__all__ = [
    "ChainSyncStreamSource",
    "DagOutputSource",
    "DatasetColumn",
    "DatasetInfo",
    "DatasetsClient",
    "Page",
    "PublishResult",
]
_KINDS = {pb.DATASET_KIND_VERSIONED: "versioned", pb.DATASET_KIND_PARTITIONED: "partitioned"}


def _dataset(d: pb.Dataset) -> DatasetInfo:
    source = None
    if d.HasField("chain_sync_stream"):
        source = ChainSyncStreamSource(d.chain_sync_stream.sync_name, d.chain_sync_stream.dataset_key)
    partitioned = d.kind == pb.DATASET_KIND_PARTITIONED and bool(d.current_version)
    return DatasetInfo(
        dataset_id=d.dataset_id,
        name=d.name,
        published_names=tuple(d.published_names),
        kind=_KINDS.get(d.kind, "unknown"),
        published=d.published,
        current_version=d.current_version or None,
        range_start=d.range_start if partitioned else None,
        range_end=d.range_end if partitioned else None,
        version_count=d.version_count,
        pii_columns=tuple(d.pii_columns),
        created_at=d.create_time.ToDatetime(tzinfo=UTC),
        updated_at=d.update_time.ToDatetime(tzinfo=UTC),
        chain_sync_stream=source,
        columns=tuple(DatasetColumn(c.name, c.type, c.nullable, c.pii) for c in d.columns),
    )


class DatasetsClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str) -> None:
        self._stub = datasets_pb2_grpc.DatasetServiceStub(channel)
        self._md = ((AUTHORIZATION, f"Bearer {token}"),)

    async def list(self, *, page_size: int = 0, page_token: str = "") -> Page[DatasetInfo]:
        req = pb.ListDatasetsRequest(page_size=page_size, page_token=page_token)
        resp = await call(self._stub.ListDatasets(req, metadata=self._md))
        return Page([_dataset(d) for d in resp.datasets], resp.next_page_token)

    def iterate(self, *, page_size: int = 0) -> AsyncIterator[DatasetInfo]:
        """Every dataset of the org, page by page (the next page fetched when needed)."""
        return every_item(lambda token: self.list(page_size=page_size, page_token=token))

    async def get(self, name: str) -> DatasetInfo:
        resp = await call(self._stub.GetDataset(pb.GetDatasetRequest(name=name), metadata=self._md))
        return _dataset(resp.dataset)

    async def publish(self, name: str, source: ChainSyncStreamSource | DagOutputSource) -> PublishResult:
        req = pb.PublishDatasetRequest(name=name)
        if isinstance(source, ChainSyncStreamSource):
            req.chain_sync_stream.sync_name = source.sync_name
            req.chain_sync_stream.dataset_key = source.dataset_key
        else:
            req.dag_output.dag_name = source.dag_name
            req.dag_output.job_name = source.job_name
            req.dag_output.output_index = source.output_index
        resp = await call(self._stub.PublishDataset(req, metadata=self._md))
        return PublishResult(_dataset(resp.dataset), resp.created)
