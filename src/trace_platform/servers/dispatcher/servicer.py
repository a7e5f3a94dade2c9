"""gRPC handlers for the Dispatcher: authenticate, convert, call the service."""

from __future__ import annotations

import json
from typing import Any

from trace_platform.core.errors import InvalidArgument, NotFound
from trace_platform.core.models import TaskRef
from trace_platform.core.tokens import CapabilityClaims, TokenVerifier
from trace_platform.core.validation import require_uuid
from trace_platform.gen.trace.v1 import dispatcher_pb2, dispatcher_pb2_grpc
from trace_platform.servers.common.auth import (
    ADMIN_TOKEN,
    TASK_CAPABILITY,
    WORKER_TOKEN,
    metadata_value,
    require_shared_secret,
)
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.dispatcher import convert
from trace_platform.servers.dispatcher.batch import BatchCalls
from trace_platform.servers.dispatcher.service import DispatcherService

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type hints)
pb = dispatcher_pb2


class DispatcherServicer(dispatcher_pb2_grpc.DispatcherServiceServicer):
    def __init__(
        self,
        service: DispatcherService,
        verifier: TokenVerifier,
        worker_token: str | None,
        admin_token: str | None,
    ) -> None:
        self._svc = service
        self._verifier = verifier
        self._worker_token = worker_token
        self._admin_token = admin_token
        self._settings = service.settings
        self._batch = BatchCalls(service, verifier)

    async def _task_scope(self, context: Ctx, ref: TaskRef) -> CapabilityClaims:
        claims = await self._verifier.verify(metadata_value(context, TASK_CAPABILITY))
        claims.bind(ref.task_id, ref.attempt)
        return claims

    async def CreateTasks(self, request: pb.CreateTasksRequest, context: Ctx) -> pb.CreateTasksResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        tasks = [convert.new_task(spec, i, self._settings) for i, spec in enumerate(request.tasks)]
        return pb.CreateTasksResponse(task_ids=await self._svc.create_tasks(tasks))

    async def GetTask(self, request: pb.GetTaskRequest, context: Ctx) -> pb.GetTaskResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        view = await self._svc.get_task(require_uuid("task_id", request.task_id))
        if view is None:
            raise NotFound("TASK_NOT_FOUND", "no such task")
        t = view.task
        return pb.GetTaskResponse(
            task=convert.task_payload(t),
            max_attempts=t.max_attempts,
            worker_id=t.worker_id or "",
            lease_expires_at=convert.timestamp(t.lease_expires_at),
            next_retry_at=convert.timestamp(t.next_retry_at),
            error_message=t.error_message or "",
            terminal=view.terminal,
            attempts=[
                pb.TaskAttempt(
                    attempt=a.attempt, worker_id=a.worker_id, outcome=a.outcome, error_message=a.error_message
                )
                for a in view.attempts
            ],
        )

    async def ClaimTask(self, request: pb.ClaimTaskRequest, context: Ctx) -> pb.ClaimTaskResponse:
        require_shared_secret(context, WORKER_TOKEN, self._worker_token)
        task_id, worker_id = convert.claim_request(request)
        return convert.claim_response(await self._svc.claim(task_id, worker_id))

    async def FetchTask(self, request: pb.FetchTaskRequest, context: Ctx) -> pb.FetchTaskResponse:
        require_shared_secret(context, WORKER_TOKEN, self._worker_token)
        view = await self._svc.get_task(require_uuid("task_id", request.task_id))
        if view is None:
            raise NotFound("TASK_NOT_FOUND", "no such task")
        return pb.FetchTaskResponse(task=convert.task_payload(view.task))

    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Ctx) -> pb.HeartbeatResponse:
        ref = convert.task_ref(request.task, request.HasField("task"))
        claims = await self._task_scope(context, ref)
        expires = await self._svc.heartbeat(ref)  # fenced: raises unless the attempt is live
        return convert.heartbeat_response(expires, self._svc.renewal(claims))

    async def CompleteTask(self, request: pb.CompleteTaskRequest, context: Ctx) -> pb.CompleteTaskResponse:
        ref = convert.task_ref(request.task, request.HasField("task"))
        claims = await self._task_scope(context, ref)
        return await self._batch.complete_one(claims, convert.completion(request, ref))

    async def EmitEvents(self, request: pb.EmitEventsRequest, context: Ctx) -> pb.EmitEventsResponse:
        ref = convert.task_ref(request.task, request.HasField("task"))
        await self._task_scope(context, ref)
        accepted = await self._svc.emit_events(ref, convert.events(list(request.events)))
        return pb.EmitEventsResponse(accepted=accepted)

    async def BufferPublish(self, request: pb.BufferPublishRequest, context: Ctx) -> pb.BufferPublishResponse:
        ref = convert.task_ref(request.task, request.HasField("task"))
        claims = await self._task_scope(context, ref)
        if not convert.SCOPE_RE.match(request.dedupe_scope):
            raise InvalidArgument("INVALID_NAME", "dedupe_scope must be a slug", field="dedupe_scope")
        publish_id, duplicate = await self._svc.buffer_publish(
            claims, ref, request.batch_uri, request.content_type, request.batch_size_bytes, request.dedupe_scope
        )
        return pb.BufferPublishResponse(publish_id=publish_id, duplicate=duplicate)

    async def GetTaskJwks(self, request: pb.GetTaskJwksRequest, context: Ctx) -> pb.GetTaskJwksResponse:
        return pb.GetTaskJwksResponse(jwks_json=json.dumps(self._svc.jwks()))

    async def ClaimTasks(self, request: pb.ClaimTasksRequest, context: Ctx) -> pb.ClaimTasksResponse:
        require_shared_secret(context, WORKER_TOKEN, self._worker_token)
        return await self._batch.claim(request)

    async def HeartbeatTasks(self, request: pb.HeartbeatTasksRequest, context: Ctx) -> pb.HeartbeatTasksResponse:
        return await self._batch.heartbeat(request)

    async def CompleteTasks(self, request: pb.CompleteTasksRequest, context: Ctx) -> pb.CompleteTasksResponse:
        return await self._batch.complete(request)


def dispatcher_binding(servicer: DispatcherServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["DispatcherService"].full_name,
        register=lambda server: dispatcher_pb2_grpc.add_DispatcherServiceServicer_to_server(servicer, server),
    )
