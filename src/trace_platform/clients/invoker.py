"""Typed client for the RuntimeInvoker service (used by the Dispatcher side and tests)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from trace_platform.clients.errors import call
from trace_platform.core.metadata import WORKER_TOKEN
from trace_platform.gen.trace.v1 import invoker_pb2, invoker_pb2_grpc


class InvokerClient:
    def __init__(self, channel: grpc.aio.Channel, *, worker_token: str | None = None) -> None:
        self._stub = invoker_pb2_grpc.RuntimeInvokerServiceStub(channel)
        self._md = ((WORKER_TOKEN, worker_token),) if worker_token else ()

    async def invoke(
        self,
        *,
        task_id: str,
        attempt: int,
        lease_token: str,
        lease_expires_at: datetime,
        capability_token: str,
        bundle_url: str,
        bundle_sha256: str = "",
        operator: str = "udf",
        config: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> invoker_pb2.InvokeResponse:
        expires = timestamp_pb2.Timestamp()
        expires.FromDatetime(lease_expires_at)
        req = invoker_pb2.InvokeRequest(
            task_id=task_id,
            attempt=attempt,
            lease_token=lease_token,
            lease_expires_at=expires,
            capability_token=capability_token,
            bundle_url=bundle_url,
            bundle_sha256=bundle_sha256,
            operator=operator,
            config_json=json.dumps(config or {}),
            inputs_json=json.dumps(inputs or {}),
        )
        return await call(self._stub.Invoke(req, metadata=self._md, timeout=timeout))
