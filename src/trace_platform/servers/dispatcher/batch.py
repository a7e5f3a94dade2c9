"""The batch RPCs: ClaimTasks, HeartbeatTasks and CompleteTasks carry many independent
single calls in one RPC. Every item is validated, authorized and fenced exactly like its
single call and gets that call's result or error, in request order. The common case
(a live lease) of all items runs as one SQL statement; every other item takes the
single call's path, so fencing diagnosis and idempotent replays answer identically."""

from __future__ import annotations

import logging
from collections.abc import Sized
from typing import TypeVar

from google.rpc import code_pb2

from trace_platform.core.errors import Internal, InvalidArgument, TraceError
from trace_platform.core.models import TaskRef
from trace_platform.core.tokens import CapabilityClaims, TokenVerifier
from trace_platform.gen.trace.v1 import dispatcher_pb2 as pb
from trace_platform.servers.common.errors import STATUS_BY_KIND
from trace_platform.servers.dispatcher import convert
from trace_platform.servers.dispatcher.service import DispatcherService

log = logging.getLogger(__name__)
MAX_ITEMS = 256
Item = TypeVar("Item")


def item_error(exc: Exception) -> pb.ItemError:
    if not isinstance(exc, TraceError):
        log.error("batch item failed", exc_info=exc)
        exc = Internal("INTERNAL", "internal error")
    return pb.ItemError(code=getattr(code_pb2, STATUS_BY_KIND[exc.kind].name), reason=exc.reason, message=exc.message)


def _check_size(items: Sized) -> None:
    if not items:
        raise InvalidArgument("MISSING_FIELD", "at least one item is required", field="items")
    if len(items) > MAX_ITEMS:
        raise InvalidArgument("TOO_MANY_ITEMS", f"at most {MAX_ITEMS} items per call", field="items")


class BatchCalls:
    def __init__(self, service: DispatcherService, verifier: TokenVerifier) -> None:
        self._svc = service
        self._verifier = verifier

    async def _authorized_ref(self, msg: pb.HeartbeatRequest | pb.CompleteTaskRequest, token: str) -> TaskRef:
        return (await self._authorized(msg, token))[0]

    async def _authorized(
        self, msg: pb.HeartbeatRequest | pb.CompleteTaskRequest, token: str
    ) -> tuple[TaskRef, CapabilityClaims]:
        ref = convert.task_ref(msg.task, msg.HasField("task"))
        claims = await self._verifier.verify(token)
        claims.bind(ref.task_id, ref.attempt)
        return ref, claims

    async def claim(self, request: pb.ClaimTasksRequest) -> pb.ClaimTasksResponse:
        _check_size(request.claims)
        results: list[pb.ClaimTaskResult] = [pb.ClaimTaskResult() for _ in request.claims]
        valid: list[tuple[int, tuple[str, str]]] = []
        for i, msg in enumerate(request.claims):
            try:
                valid.append((i, convert.claim_request(msg)))
            except Exception as exc:
                results[i].error.CopyFrom(item_error(exc))
        claimed = await self._svc.claim_many([args for _, args in valid])
        for (i, _), outcome in zip(valid, claimed, strict=True):
            results[i].ok.CopyFrom(convert.claim_response(outcome))
        return pb.ClaimTasksResponse(results=results)

    async def heartbeat(self, request: pb.HeartbeatTasksRequest) -> pb.HeartbeatTasksResponse:
        _check_size(request.items)
        results: list[pb.HeartbeatResult] = [pb.HeartbeatResult() for _ in request.items]
        valid: list[tuple[int, TaskRef, CapabilityClaims]] = []
        for i, item in enumerate(request.items):
            try:
                valid.append((i, *await self._authorized(item.request, item.capability_token)))
            except Exception as exc:
                results[i].error.CopyFrom(item_error(exc))
        extended = await self._svc.heartbeat_many([ref for _, ref, _ in valid])
        for (i, ref, claims), expires in zip(valid, extended, strict=True):
            try:
                if expires is None:
                    expires = await self._svc.heartbeat(ref)
                # As the single call: a renewed token once the lease is extended.
                results[i].ok.CopyFrom(convert.heartbeat_response(expires, self._svc.renewal(claims)))
            except Exception as exc:
                results[i].error.CopyFrom(item_error(exc))
        return pb.HeartbeatTasksResponse(results=results)

    async def complete(self, request: pb.CompleteTasksRequest) -> pb.CompleteTasksResponse:
        _check_size(request.items)
        results: list[pb.CompleteResult] = [pb.CompleteResult() for _ in request.items]
        valid: list[tuple[int, convert.CompletionArgs]] = []
        claims_of: dict[int, CapabilityClaims] = {}
        for i, item in enumerate(request.items):
            try:
                ref, claims_of[i] = await self._authorized(item.request, item.capability_token)
                valid.append((i, convert.completion(item.request, ref)))
            except Exception as exc:
                results[i].error.CopyFrom(item_error(exc))
        fast = [(i, args) for i, args in valid if args.live_fast_path]
        done = await self._svc.complete_live_many([a.ref for _, a in fast], [a.outputs for _, a in fast])
        completed = {i for (i, _), ok in zip(fast, done, strict=True) if ok}
        for i, args in valid:
            try:
                if i in completed:
                    results[i].ok.status = convert.STATUS_TO_PB[args.status]
                else:
                    results[i].ok.CopyFrom(await self.complete_one(claims_of[i], args))
            except Exception as exc:
                results[i].error.CopyFrom(item_error(exc))
        return pb.CompleteTasksResponse(results=results)

    async def complete_one(self, claims: CapabilityClaims, a: convert.CompletionArgs) -> pb.CompleteTaskResponse:
        """One completion, authorized by ``claims`` (the verified token bound to ``a.ref``)."""
        result = await self._svc.complete(
            claims, a.ref, a.status, a.events, a.outputs, a.publications, a.error_message, permanent=a.permanent
        )
        return pb.CompleteTaskResponse(
            duplicate=result.duplicate,
            status=convert.STATUS_TO_PB[result.status],
            next_retry_at=convert.timestamp(result.next_retry_at),
        )
