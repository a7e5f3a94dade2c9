"""Reading credentials from gRPC metadata. Deny by default; constant-time compares."""

from __future__ import annotations

import hmac

import grpc

from trace_platform.core.errors import PermissionDenied, Unauthenticated
from trace_platform.core.metadata import ADMIN_TOKEN, AUTHORIZATION, TASK_CAPABILITY, WORKER_TOKEN

__all__ = ["ADMIN_TOKEN", "AUTHORIZATION", "TASK_CAPABILITY", "WORKER_TOKEN"]


def metadata_value(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return None


def require_shared_secret(context: grpc.aio.ServicerContext, key: str, expected: str | None) -> None:
    """Worker and admin RPCs: a configured secret must be presented exactly."""
    presented = metadata_value(context, key)
    if not presented:
        raise Unauthenticated("CREDENTIAL_MISSING", f"{key} required")
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise PermissionDenied("CREDENTIAL_INVALID", f"{key} rejected")


def bearer_token(context: grpc.aio.ServicerContext) -> str | None:
    value = metadata_value(context, AUTHORIZATION)
    if value and value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None
