"""Typed client for chain_sync administration."""

from __future__ import annotations

import grpc

from trace_platform.clients.errors import call
from trace_platform.core.metadata import ADMIN_TOKEN
from trace_platform.gen.trace.v1 import chain_sync_pb2, chain_sync_pb2_grpc

pb = chain_sync_pb2


class ChainSyncClient:
    def __init__(self, channel: grpc.aio.Channel, *, admin_token: str) -> None:
        self._stub = chain_sync_pb2_grpc.ChainSyncServiceStub(channel)
        self._md = ((ADMIN_TOKEN, admin_token),)

    async def apply(self, org_id: str, yaml_text: str) -> pb.ApplyChainSyncResponse:
        req = pb.ApplyChainSyncRequest(org_id=org_id, yaml=yaml_text)
        return await call(self._stub.ApplyChainSync(req, metadata=self._md))

    async def pause(self, org_id: str, name: str) -> None:
        await call(self._stub.PauseChainSync(pb.PauseChainSyncRequest(org_id=org_id, name=name), metadata=self._md))

    async def resume(self, org_id: str, name: str) -> None:
        req = pb.ResumeChainSyncRequest(org_id=org_id, name=name)
        await call(self._stub.ResumeChainSync(req, metadata=self._md))

    async def status(self, org_id: str, name: str = "") -> list[pb.ChainSyncStatus]:
        return list((await self.status_response(org_id, name)).jobs)

    async def status_response(self, org_id: str, name: str = "") -> pb.GetChainSyncStatusResponse:
        """The jobs and the endpoints of their RPC pools."""
        req = pb.GetChainSyncStatusRequest(org_id=org_id, name=name)
        return await call(self._stub.GetChainSyncStatus(req, metadata=self._md))

    async def verify(
        self, org_id: str, name: str, from_block: int | None = None, to_block: int | None = None
    ) -> pb.VerifyChainSyncResponse:
        req = pb.VerifyChainSyncRequest(org_id=org_id, name=name)
        if from_block is not None:
            req.from_block = from_block
        if to_block is not None:
            req.to_block = to_block
        return await call(self._stub.VerifyChainSync(req, metadata=self._md, timeout=300))
