"""A RuntimeInvoker that runs each invocation on a RuntimeInvoker Service in another
process (the cluster profile's invoker role), over gRPC with the worker token."""

from __future__ import annotations

import grpc

from trace_platform.adapters.invoker.base import Invocation, InvocationResult
from trace_platform.clients.invoker import InvokerClient


class RemoteInvoker:
    def __init__(self, channel: grpc.aio.Channel, worker_token: str | None, timeout_seconds: float) -> None:
        self._client = InvokerClient(channel, worker_token=worker_token)
        # The service enforces the UDF's own timeout; this bounds a hung connection.
        self._timeout = timeout_seconds + 30.0

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        r = await self._client.invoke(
            task_id=invocation.task_id,
            attempt=invocation.attempt,
            lease_token=invocation.lease_token,
            lease_expires_at=invocation.lease_expires_at,
            capability_token=invocation.capability_token,
            bundle_url=invocation.bundle_url,
            bundle_sha256=invocation.bundle_sha256,
            operator=invocation.operator,
            config=invocation.config,
            inputs=invocation.inputs,
            timeout=self._timeout,
        )
        return InvocationResult(
            exit_code=r.exit_code,
            result_json=r.result_json,
            stderr_tail=r.stderr_tail,
            timed_out=r.timed_out,
            error_reason=r.error_reason,
            runtime=r.runtime,
            duration_seconds=r.duration_ms / 1000,
        )

    async def close(self) -> None:
        """The channel belongs to whoever opened it."""
