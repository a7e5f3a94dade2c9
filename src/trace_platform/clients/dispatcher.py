"""Typed client for the Dispatcher over the generated stubs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc

from trace_platform.clients.errors import call
from trace_platform.core.metadata import ADMIN_TOKEN, TASK_CAPABILITY, WORKER_TOKEN
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2, dispatcher_pb2_grpc

pb = dispatcher_pb2


def task_ref(ref: TaskRef) -> common_pb2.TaskRef:
    return common_pb2.TaskRef(task_id=ref.task_id, attempt=ref.attempt, lease_token=ref.lease_token)


def complete_request(
    ref: TaskRef,
    status: int,
    events: Sequence[common_pb2.DatasetEvent],
    outputs: Sequence[common_pb2.TaskOutput],
    datasets_published: Sequence[common_pb2.DatasetPublication],
    error_message: str,
    permanent: bool = False,
) -> pb.CompleteTaskRequest:
    return pb.CompleteTaskRequest(
        task=task_ref(ref),
        status=status,  # type: ignore[arg-type]
        events=events,
        outputs=outputs,
        datasets_published=datasets_published,
        error_message=error_message,
        permanent=permanent,
    )


@dataclass(frozen=True)
class HeartbeatAnswer:
    """A heartbeat's answer: the new lease expiry, and a renewed capability token for
    the same attempt when the Dispatcher sent one (None: keep using the current one)."""

    lease_expires_at: datetime
    capability_token: str | None = None
    capability_expires_at: datetime | None = None

    @staticmethod
    def from_pb(resp: pb.HeartbeatResponse) -> HeartbeatAnswer:
        renewed = resp.capability_token or None
        return HeartbeatAnswer(
            lease_expires_at=resp.lease_expires_at.ToDatetime(UTC),
            capability_token=renewed,
            capability_expires_at=resp.capability_expires_at.ToDatetime(UTC) if renewed else None,
        )


class DispatcherClient:
    def __init__(
        self, channel: grpc.aio.Channel, *, worker_token: str | None = None, admin_token: str | None = None
    ) -> None:
        self._stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
        self._worker_md = ((WORKER_TOKEN, worker_token),) if worker_token else ()
        self._admin_md = ((ADMIN_TOKEN, admin_token),) if admin_token else ()

    async def create_tasks(self, specs: Sequence[pb.TaskSpec]) -> list[str]:
        resp = await call(self._stub.CreateTasks(pb.CreateTasksRequest(tasks=specs), metadata=self._admin_md))
        return list(resp.task_ids)

    async def create_task(
        self, org_id: str, operator: str, config: dict[str, Any] | None = None, max_attempts: int = 0
    ) -> str:
        spec = pb.TaskSpec(
            org_id=org_id, operator=operator, config_json=json.dumps(config or {}), max_attempts=max_attempts
        )
        return (await self.create_tasks([spec]))[0]

    async def get_task(self, task_id: str) -> pb.GetTaskResponse:
        return await call(self._stub.GetTask(pb.GetTaskRequest(task_id=task_id), metadata=self._admin_md))

    async def claim(self, task_id: str, worker_id: str) -> pb.ClaimTaskResponse:
        return await self._send_claim(pb.ClaimTaskRequest(task_id=task_id, worker_id=worker_id))

    async def fetch(self, task_id: str) -> pb.FetchTaskResponse:
        return await call(self._stub.FetchTask(pb.FetchTaskRequest(task_id=task_id), metadata=self._worker_md))

    async def heartbeat(self, ref: TaskRef, capability: str) -> datetime:
        """The new lease expiry (a renewed token, if any, is dropped: see ``renew``)."""
        return (await self.renew(ref, capability)).lease_expires_at

    async def renew(self, ref: TaskRef, capability: str) -> HeartbeatAnswer:
        """Heartbeat, keeping the renewed capability token the Dispatcher may send."""
        return HeartbeatAnswer.from_pb(await self._send_heartbeat(pb.HeartbeatRequest(task=task_ref(ref)), capability))

    async def complete(
        self,
        ref: TaskRef,
        capability: str,
        status: int = pb.COMPLETION_STATUS_COMPLETED,
        *,
        events: Sequence[common_pb2.DatasetEvent] = (),
        outputs: Sequence[common_pb2.TaskOutput] = (),
        datasets_published: Sequence[common_pb2.DatasetPublication] = (),
        error_message: str = "",
        permanent: bool = False,
    ) -> pb.CompleteTaskResponse:
        """``permanent`` (failures only): another attempt would fail the same way; no retry."""
        req = complete_request(ref, status, events, outputs, datasets_published, error_message, permanent)
        return await self._send_complete(req, capability)

    # One RPC per call; BatchingDispatcherClient sends these through the batch RPCs.
    async def _send_claim(self, req: pb.ClaimTaskRequest) -> pb.ClaimTaskResponse:
        return await call(self._stub.ClaimTask(req, metadata=self._worker_md))

    async def _send_heartbeat(self, req: pb.HeartbeatRequest, capability: str) -> pb.HeartbeatResponse:
        return await call(self._stub.Heartbeat(req, metadata=((TASK_CAPABILITY, capability),)))

    async def _send_complete(self, req: pb.CompleteTaskRequest, capability: str) -> pb.CompleteTaskResponse:
        return await call(self._stub.CompleteTask(req, metadata=((TASK_CAPABILITY, capability),)))

    async def emit_events(self, ref: TaskRef, capability: str, events: Sequence[common_pb2.DatasetEvent]) -> int:
        req = pb.EmitEventsRequest(task=task_ref(ref), events=events)
        resp = await call(self._stub.EmitEvents(req, metadata=((TASK_CAPABILITY, capability),)))
        return int(resp.accepted)

    async def buffer_publish(
        self,
        ref: TaskRef,
        capability: str,
        batch_uri: str,
        size: int,
        *,
        content_type: str = "application/jsonl",
        dedupe_scope: str = "alert_events",
    ) -> pb.BufferPublishResponse:
        req = pb.BufferPublishRequest(
            task=task_ref(ref),
            batch_uri=batch_uri,
            content_type=content_type,
            batch_size_bytes=size,
            dedupe_scope=dedupe_scope,
        )
        return await call(self._stub.BufferPublish(req, metadata=((TASK_CAPABILITY, capability),)))

    async def jwks(self) -> dict[str, Any]:
        resp = await call(self._stub.GetTaskJwks(pb.GetTaskJwksRequest()))
        jwks: dict[str, Any] = json.loads(resp.jwks_json)
        return jwks
