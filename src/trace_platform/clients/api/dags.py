"""Typed async client of the DagService: deploy a DAG version, list versions, activate
and roll back. Results are dataclasses; errors are trace_platform.clients.errors types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import grpc

from trace_platform.clients.api.pages import Page, every_item
from trace_platform.clients.errors import call
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.gen.trace.api.v1 import dags_pb2 as pb
from trace_platform.gen.trace.api.v1 import dags_pb2_grpc


@dataclass(frozen=True)
class DagVersionInfo:
    id: str
    dag: str
    number: int
    yaml_sha256: str
    created_at: datetime
    active: bool


@dataclass(frozen=True)
class Deployed:
    version: DagVersionInfo
    already_existed: bool  # the same YAML was deployed before: nothing was written


@dataclass(frozen=True)
class DagInfo:
    name: str
    version_count: int
    active_version: DagVersionInfo | None
    created_at: datetime


@dataclass(frozen=True)
class Activated:
    version: DagVersionInfo
    previous_version_id: str  # empty: none was active
    changed: bool


def _version(v: pb.DagVersion) -> DagVersionInfo:
    return DagVersionInfo(v.id, v.dag, v.number, v.yaml_sha256, v.create_time.ToDatetime(), v.active)


class DagsClient:
    def __init__(self, channel: grpc.aio.Channel, *, token: str) -> None:
        self._stub = dags_pb2_grpc.DagServiceStub(channel)
        self._md = ((AUTHORIZATION, f"Bearer {token}"),)

    async def deploy(self, yaml: str) -> Deployed:
        resp = await call(self._stub.DeployDag(pb.DeployDagRequest(yaml=yaml), metadata=self._md))
        return Deployed(_version(resp.version), resp.already_existed)

    async def get(self, name: str) -> DagInfo:
        resp = await call(self._stub.GetDag(pb.GetDagRequest(name=name), metadata=self._md))
        active = _version(resp.active_version) if resp.HasField("active_version") else None
        return DagInfo(resp.name, resp.version_count, active, resp.create_time.ToDatetime())

    async def list_versions(self, dag: str, *, page_size: int = 0, page_token: str = "") -> Page[DagVersionInfo]:
        req = pb.ListDagVersionsRequest(dag=dag, page_size=page_size, page_token=page_token)
        resp = await call(self._stub.ListDagVersions(req, metadata=self._md))
        return Page([_version(v) for v in resp.versions], resp.next_page_token)

    def iterate_versions(self, dag: str, *, page_size: int = 0) -> AsyncIterator[DagVersionInfo]:
        """Every version in deploy order, page by page."""
        return every_item(lambda token: self.list_versions(dag, page_size=page_size, page_token=token))

    async def activate(self, dag: str, version: str) -> Activated:
        """``version``: a version id or its number."""
        req = pb.ActivateDagVersionRequest(dag=dag, version=version)
        resp = await call(self._stub.ActivateDagVersion(req, metadata=self._md))
        return Activated(_version(resp.version), resp.previous_version_id, resp.changed)

    async def rollback(self, dag: str) -> Activated:
        resp = await call(self._stub.RollbackDag(pb.RollbackDagRequest(dag=dag), metadata=self._md))
        return Activated(_version(resp.version), resp.previous_version_id, True)
