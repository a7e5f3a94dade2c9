"""DagService over gRPC: protobuf in and out, authentication, nothing else."""

from __future__ import annotations

from typing import Any

from trace_platform.adapters.postgres.dag_repository import DagVersion
from trace_platform.core.dag_config import NAME_RE
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import PageRequest
from trace_platform.gen.trace.api.v1 import dags_pb2 as pb
from trace_platform.gen.trace.api.v1 import dags_pb2_grpc
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Role, UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type hints)


def version_pb(v: DagVersion) -> pb.DagVersion:
    out = pb.DagVersion(id=v.id, dag=v.dag, number=v.number, yaml_sha256=v.yaml_sha256, active=v.active)
    out.create_time.FromDatetime(v.created_at)
    return out


def _dag_name(value: str, field: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise InvalidArgument("INVALID_NAME", f"{field} must match {NAME_RE.pattern}", field=field)
    return value


class DagServicer(dags_pb2_grpc.DagServiceServicer):
    def __init__(self, service: DagService, auth: UserAuthenticator) -> None:
        self._service = service
        self._auth = auth

    async def DeployDag(self, request: pb.DeployDagRequest, context: Ctx) -> pb.DeployDagResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        version = await self._service.deploy(who, request.yaml)
        return pb.DeployDagResponse(version=version_pb(version), already_existed=version.already_existed)

    async def GetDag(self, request: pb.GetDagRequest, context: Ctx) -> pb.GetDagResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        info = await self._service.get(who, _dag_name(request.name, "name"))
        out = pb.GetDagResponse(name=info.name, version_count=info.version_count)
        out.create_time.FromDatetime(info.created_at)
        if info.active is not None:
            out.active_version.CopyFrom(version_pb(info.active))
        return out

    async def ListDagVersions(self, request: pb.ListDagVersionsRequest, context: Ctx) -> pb.ListDagVersionsResponse:
        who = await self._auth.authenticate(context, Role.VIEWER)
        page = PageRequest.parse(request.page_size, request.page_token)
        versions, token = await self._service.list_versions(who, _dag_name(request.dag, "dag"), page)
        return pb.ListDagVersionsResponse(versions=[version_pb(v) for v in versions], next_page_token=token)

    async def ActivateDagVersion(
        self, request: pb.ActivateDagVersionRequest, context: Ctx
    ) -> pb.ActivateDagVersionResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        if not request.version or len(request.version) > 64:
            raise InvalidArgument("MISSING_FIELD", "version (an id or a number) is required", field="version")
        done = await self._service.activate(who, _dag_name(request.dag, "dag"), request.version)
        return pb.ActivateDagVersionResponse(
            version=version_pb(done.version), previous_version_id=done.previous_version_id or "", changed=done.changed
        )

    async def RollbackDag(self, request: pb.RollbackDagRequest, context: Ctx) -> pb.RollbackDagResponse:
        who = await self._auth.authenticate(context, Role.EDITOR)
        done = await self._service.rollback(who, _dag_name(request.dag, "dag"))
        return pb.RollbackDagResponse(
            version=version_pb(done.version), previous_version_id=done.previous_version_id or ""
        )


def dag_binding(servicer: DagServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["DagService"].full_name,
        register=lambda server: dags_pb2_grpc.add_DagServiceServicer_to_server(servicer, server),
    )
