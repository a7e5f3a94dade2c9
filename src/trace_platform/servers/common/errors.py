"""The one boundary where domain errors become gRPC status.

A ``TraceError`` becomes its status code with a ``google.rpc.ErrorInfo`` detail
carrying the reason code (domain ``trace``). Anything else becomes INTERNAL with no
details leaked; the traceback is logged, never the request.

Before a servicer runs, the request passes ``request_checks`` (no NUL or lone surrogate
in any string, timestamps in range, decodable at all): the one place that holds for
every service. A RecursionError (input nested deeper than the code can walk) is the
caller's input, not a fault of the server: INVALID_ARGUMENT ``INPUT_TOO_DEEP``. A
unique violation no repository translated is still a conflict with what exists, not a
fault: ALREADY_EXISTS ``ALREADY_EXISTS`` (logged; no constraint or SQL in the answer).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from trace_platform.core.errors import AlreadyExists, ErrorKind, Internal, InvalidArgument, TraceError
from trace_platform.servers.common.request_checks import check_request, safe_deserializer

log = logging.getLogger(__name__)
ERROR_DOMAIN = "trace"

STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.ABORTED: grpc.StatusCode.ABORTED,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def to_status(err: TraceError) -> grpc.Status:
    code = STATUS_BY_KIND[err.kind]
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=err.message, details=[detail])
    return rpc_status.to_status(status)


async def _abort(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, TraceError):
        err = exc
    elif isinstance(exc, RecursionError):
        err = InvalidArgument("INPUT_TOO_DEEP", "the request is nested too deeply")
    elif isinstance(exc, asyncpg.UniqueViolationError):
        log.warning("unique violation reached the boundary", extra={"method": method})
        err = AlreadyExists("ALREADY_EXISTS", "the request conflicts with a record that already exists")
    else:
        log.exception("unhandled error", extra={"method": method})
        err = Internal("INTERNAL", "internal error")
    await context.abort_with_status(to_status(err))


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every RPC kind through the same two guards: one for a single answer (unary and
    client-streaming), one for a stream of answers (server-streaming and bidi). A request,
    or each message of a client stream, passes ``check_request`` before the servicer sees it."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, _one, _answer),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, _one, _answers),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, _checked, _answer),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, _checked, _answers),
        )
        for inner, make, check, guard in kinds:
            if inner is not None:
                return make(
                    guard(inner, check, method),
                    safe_deserializer(handler.request_deserializer),
                    handler.response_serializer,
                )
        return handler


def _one(request: Any) -> Any:
    check_request(request)
    return request


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream's messages, each passing the same checks as a unary request."""
    async for request in requests:
        check_request(request)
        yield request


Check = Callable[[Any], Any]


def _answer(inner: Callable[..., Awaitable[Any]], check: Check, method: str) -> Callable[..., Awaitable[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await inner(check(request), context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return guarded


def _answers(inner: Callable[..., AsyncIterator[Any]], check: Check, method: str) -> Callable[..., AsyncIterator[Any]]:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for item in inner(check(request), context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, method)

    return guarded
