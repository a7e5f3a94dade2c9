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
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    check_request(request)
                    return await inner(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_unary_rpc_method_handler(
                unary, safe_deserializer(handler.request_deserializer), handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    check_request(request)
                    async for item in inner_stream(request, context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.unary_stream_rpc_method_handler(
                stream, safe_deserializer(handler.request_deserializer), handler.response_serializer
            )
        if handler.stream_unary is not None:
            inner_client_stream = handler.stream_unary

            async def client_stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
                try:
                    return await inner_client_stream(_checked(requests), context)
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.stream_unary_rpc_method_handler(
                client_stream, safe_deserializer(handler.request_deserializer), handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_bidi = handler.stream_stream

            async def bidi(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                try:
                    async for item in inner_bidi(_checked(requests), context):
                        yield item
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:
                    await _abort(context, exc, method)

            return grpc.stream_stream_rpc_method_handler(
                bidi, safe_deserializer(handler.request_deserializer), handler.response_serializer
            )
        return handler


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client stream's messages, each passing the same checks as a unary request."""
    async for request in requests:
        check_request(request)
        yield request
