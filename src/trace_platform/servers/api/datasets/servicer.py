"""DatasetService over gRPC: authentication, protobuf in and out; logic in service.py."""

from __future__ import annotations

import grpc

from trace_platform.core.dataset_registry import ChainSyncStreamSource, DagOutputSource, DatasetInfo
from trace_platform.gen.trace.api.v1 import datasets_pb2 as pb
from trace_platform.gen.trace.api.v1 import datasets_pb2_grpc
from trace_platform.servers.api.datasets.service import DatasetService
from trace_platform.servers.api.identity import Role, UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding

KINDS = {"versioned": pb.DATASET_KIND_VERSIONED, "partitioned": pb.DATASET_KIND_PARTITIONED}


def dataset_pb(d: DatasetInfo) -> pb.Dataset:
    out = pb.Dataset(
        dataset_id=d.dataset_id,
        name=d.name,
        published_names=list(d.published_names),
        kind=KINDS.get(d.kind, pb.DATASET_KIND_UNSPECIFIED),
        published=d.published,
        current_version=d.current_version or "",
        range_start=d.range_start or 0,
        range_end=d.range_end or 0,
        version_count=d.version_count,
        pii_columns=list(d.pii_columns),
        columns=[pb.DatasetColumn(name=c.name, type=c.type, nullable=c.nullable, pii=c.pii) for c in d.columns],
    )
    out.create_time.FromDatetime(d.created_at)
    out.update_time.FromDatetime(d.updated_at)
    if d.chain_sync_stream is not None:
        out.chain_sync_stream.sync_name = d.chain_sync_stream.sync_name
        out.chain_sync_stream.dataset_key = d.chain_sync_stream.dataset_key
    return out


class DatasetServicer(datasets_pb2_grpc.DatasetServiceServicer):
    def __init__(self, service: DatasetService, auth: UserAuthenticator) -> None:
        self._service = service
        self._auth = auth

    async def ListDatasets(
        self, request: pb.ListDatasetsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDatasetsResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        items, token = await self._service.list_datasets(who, request.page_size, request.page_token)
        return pb.ListDatasetsResponse(datasets=[dataset_pb(d) for d in items], next_page_token=token)

    async def GetDataset(
        self, request: pb.GetDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDatasetResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        return pb.GetDatasetResponse(dataset=dataset_pb(await self._service.get(who, request.name)))

    async def PublishDataset(
        self, request: pb.PublishDatasetRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishDatasetResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        kind = request.WhichOneof("source")
        source: ChainSyncStreamSource | DagOutputSource | None = None
        if kind == "chain_sync_stream":
            s = request.chain_sync_stream
            source = ChainSyncStreamSource(s.sync_name, s.dataset_key)
        elif kind == "dag_output":
            o = request.dag_output
            source = DagOutputSource(o.dag_name, o.job_name, o.output_index)
        result = await self._service.publish(who, request.name, source)
        return pb.PublishDatasetResponse(dataset=dataset_pb(result.dataset), created=result.created)


def dataset_binding(servicer: DatasetServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["DatasetService"].full_name,
        register=lambda server: datasets_pb2_grpc.add_DatasetServiceServicer_to_server(servicer, server),
    )
