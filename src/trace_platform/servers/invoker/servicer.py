"""gRPC handlers for the RuntimeInvoker: authenticate the caller, validate the
invocation payload, run it through the configured invoker."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

from trace_platform.adapters.invoker.base import Invocation, InvocationResult, RuntimeInvoker
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.validation import require_attempt, require_json, require_uuid
from trace_platform.gen.trace.v1 import invoker_pb2, invoker_pb2_grpc
from trace_platform.servers.common.auth import WORKER_TOKEN, require_shared_secret
from trace_platform.servers.common.server import ServiceBinding

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type hints)
pb = invoker_pb2
MAX_TOKEN_CHARS = 16 * 1024
MAX_URL_CHARS = 4096
MAX_JSON_BYTES = 1024 * 1024
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")
OPERATOR_RE = re.compile(r"^[a-z][a-z0-9_.\-]{0,62}$")


def invocation_from(request: pb.InvokeRequest) -> Invocation:
    if not request.HasField("lease_expires_at"):
        raise InvalidArgument("MISSING_FIELD", "lease_expires_at is required", field="lease_expires_at")
    token = request.capability_token
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument("MISSING_FIELD", "capability_token is required", field="capability_token")
    if not request.bundle_url or len(request.bundle_url) > MAX_URL_CHARS:
        raise InvalidArgument("MISSING_FIELD", "bundle_url is required", field="bundle_url")
    if request.bundle_sha256 and not SHA256_RE.match(request.bundle_sha256):
        raise InvalidArgument("INVALID_SHA256", "bundle_sha256 must be 64 hex digits", field="bundle_sha256")
    operator = request.operator or "udf"
    if not OPERATOR_RE.match(operator):
        raise InvalidArgument("INVALID_OPERATOR", "operator must be a short lowercase name", field="operator")
    return Invocation(
        task_id=require_uuid("task_id", request.task_id),
        attempt=require_attempt(request.attempt),
        lease_token=require_uuid("lease_token", request.lease_token),
        lease_expires_at=request.lease_expires_at.ToDatetime(UTC),
        capability_token=token,
        bundle_url=request.bundle_url,
        bundle_sha256=request.bundle_sha256.lower(),
        operator=operator,
        config=require_json("config_json", request.config_json, dict, MAX_JSON_BYTES, {}),
        inputs=require_json("inputs_json", request.inputs_json, dict, MAX_JSON_BYTES, {}),
    )


def response_from(result: InvocationResult) -> pb.InvokeResponse:
    return pb.InvokeResponse(
        exit_code=result.exit_code,
        result_json=result.result_json,
        stderr_tail=result.stderr_tail,
        timed_out=result.timed_out,
        error_reason=result.error_reason,
        runtime=result.runtime,
        duration_ms=int(result.duration_seconds * 1000),
    )


class InvokerServicer(invoker_pb2_grpc.RuntimeInvokerServiceServicer):
    def __init__(self, invoker: RuntimeInvoker, worker_token: str | None) -> None:
        self._invoker = invoker
        self._worker_token = worker_token

    async def Invoke(self, request: pb.InvokeRequest, context: Ctx) -> pb.InvokeResponse:
        require_shared_secret(context, WORKER_TOKEN, self._worker_token)
        return response_from(await self._invoker.invoke(invocation_from(request)))


def invoker_binding(servicer: InvokerServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["RuntimeInvokerService"].full_name,
        register=lambda server: invoker_pb2_grpc.add_RuntimeInvokerServiceServicer_to_server(servicer, server),
    )
