"""The SDK's one choke point: gRPC failures become the platform's typed errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2

from trace_platform.core.errors import ERROR_CLASSES, ErrorKind, TraceError, Unavailable

T = TypeVar("T")
_KIND_BY_CODE = {kind.value.upper(): kind for kind in ErrorKind}


def reason_of(err: grpc.aio.AioRpcError) -> str:
    return _error_info(err)[0]


def _error_info(err: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata the server attached, else the status code's name."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason), dict(info.metadata)
    return str(err.code().name), {}


def from_rpc_error(err: grpc.aio.AioRpcError) -> TraceError:
    kind = _KIND_BY_CODE.get(err.code().name)
    if kind is None:
        return Unavailable(err.code().name, err.details() or "")
    reason, metadata = _error_info(err)
    return ERROR_CLASSES[kind](reason, err.details() or "", **metadata)


def from_item_error(code: int, reason: str, message: str) -> TraceError:
    """The error of one item of a batch call, as its single call would have raised it."""
    kind = _KIND_BY_CODE.get(code_pb2.Code.Name(code)) if code in code_pb2.Code.values() else None
    if kind is None:
        return Unavailable(reason or "UNKNOWN", message)
    return ERROR_CLASSES[kind](reason, message)


async def call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err) from None
