"""Domain errors with stable reason codes.

Every error the platform returns to a caller is one of these. The gRPC boundary
(``servers.common.errors``) maps ``kind`` to a status code and attaches ``reason``
as a ``google.rpc.ErrorInfo``; the SDK maps them back. Messages never carry user
SQL, tokens or other secrets.
"""

from __future__ import annotations

from enum import Enum


class ErrorKind(Enum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    FAILED_PRECONDITION = "failed_precondition"
    ABORTED = "aborted"
    ALREADY_EXISTS = "already_exists"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


class TraceError(Exception):
    """Base class: a reason code (UPPER_SNAKE, stable) and a short safe message."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, reason: str, message: str = "", **metadata: str) -> None:
        super().__init__(message or reason)
        self.reason = reason
        self.message = message or reason
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, {self.message!r})"


class InvalidArgument(TraceError):
    kind = ErrorKind.INVALID_ARGUMENT


class Unauthenticated(TraceError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(TraceError):
    kind = ErrorKind.PERMISSION_DENIED


class NotFound(TraceError):
    kind = ErrorKind.NOT_FOUND


class FailedPrecondition(TraceError):
    kind = ErrorKind.FAILED_PRECONDITION


class Aborted(TraceError):
    """A fencing failure: the caller's attempt or lease is no longer current."""

    kind = ErrorKind.ABORTED


class AlreadyExists(TraceError):
    kind = ErrorKind.ALREADY_EXISTS


class ResourceExhausted(TraceError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Unavailable(TraceError):
    kind = ErrorKind.UNAVAILABLE


class DeadlineExceeded(TraceError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Internal(TraceError):
    kind = ErrorKind.INTERNAL


ERROR_CLASSES: dict[ErrorKind, type[TraceError]] = {
    cls.kind: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        FailedPrecondition,
        Aborted,
        AlreadyExists,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Internal,
    )
}
