"""BundleService over gRPC: protobuf in and out, authentication, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from trace_platform.adapters.postgres.bundle_repository import BundleRecord
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import PageRequest
from trace_platform.gen.trace.api.v1 import bundles_pb2 as pb
from trace_platform.gen.trace.api.v1 import bundles_pb2_grpc
from trace_platform.servers.api.bundles.service import BundleService, UploadHeader
from trace_platform.servers.api.identity import Role, UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding

STATES = {
    "pending": pb.BUNDLE_STATE_PENDING,
    "finalizing": pb.BUNDLE_STATE_PENDING,  # being checked: not usable yet
    "ready": pb.BUNDLE_STATE_READY,
    "failed": pb.BUNDLE_STATE_FAILED,
}


def bundle_pb(r: BundleRecord) -> pb.Bundle:
    out = pb.Bundle(
        id=r.id,
        name=r.name,
        sha256=r.sha256,
        size_bytes=r.size,
        runtime=r.runtime,
        entrypoint=r.entrypoint,
        state=STATES[r.state],
        failure_reason=r.failure or "",
    )
    out.create_time.FromDatetime(r.created_at)
    if r.finalized_at is not None:
        out.finalize_time.FromDatetime(r.finalized_at)
    return out


def header_of(h: pb.BundleUploadHeader) -> UploadHeader:
    return UploadHeader(name=h.name, runtime=h.runtime, size=h.size_bytes, sha256=h.sha256)


async def _chunks(requests: AsyncIterator[pb.UploadBundleRequest]) -> AsyncIterator[bytes]:
    async for req in requests:
        if req.WhichOneof("part") != "chunk":
            raise InvalidArgument("UPLOAD_HEADER_REPEATED", "only the first message may be a header")
        yield req.chunk


class BundleServicer(bundles_pb2_grpc.BundleServiceServicer):
    def __init__(self, service: BundleService, auth: UserAuthenticator) -> None:
        self._service = service
        self._auth = auth

    async def UploadBundle(
        self, request_iterator: AsyncIterator[pb.UploadBundleRequest], context: grpc.aio.ServicerContext
    ) -> pb.UploadBundleResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("UPLOAD_HEADER_REQUIRED", "the first message must be the upload header")
        record = await self._service.upload(who, header_of(first.header), _chunks(requests))
        return pb.UploadBundleResponse(bundle=bundle_pb(record))

    async def CreateBundleUpload(
        self, request: pb.CreateBundleUploadRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateBundleUploadResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        if not request.HasField("header"):
            raise InvalidArgument("MISSING_FIELD", "header is required", field="header")
        started = await self._service.create_upload(who, header_of(request.header))
        out = pb.CreateBundleUploadResponse(bundle=bundle_pb(started.bundle), upload_url=started.url)
        if started.expires_at is not None:
            out.upload_url_expire_time.FromDatetime(started.expires_at)
        return out

    async def FinalizeBundle(
        self, request: pb.FinalizeBundleRequest, context: grpc.aio.ServicerContext
    ) -> pb.FinalizeBundleResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        return pb.FinalizeBundleResponse(bundle=bundle_pb(await self._service.finalize(who, request.bundle_id)))

    async def GetBundle(self, request: pb.GetBundleRequest, context: grpc.aio.ServicerContext) -> pb.GetBundleResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        return pb.GetBundleResponse(bundle=bundle_pb(await self._service.get(who, request.bundle_id)))

    async def ListBundles(
        self, request: pb.ListBundlesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListBundlesResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        page = await self._service.list(who, PageRequest.parse(request.page_size, request.page_token))
        return pb.ListBundlesResponse(
            bundles=[bundle_pb(r) for r in page.bundles], next_page_token=page.next_page_token
        )


def bundle_binding(servicer: BundleServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["BundleService"].full_name,
        register=lambda server: bundles_pb2_grpc.add_BundleServiceServicer_to_server(servicer, server),
    )
