"""The auth matrix of a user RPC, on a served platform: every bad credential refused
UNAUTHENTICATED with a USER_TOKEN_* reason, a too weak role PERMISSION_DENIED."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from tests.api_support import ApiUser, bad_tokens, bearer
from trace_platform.clients.errors import reason_of
from trace_platform.core.config import Settings

Call = Callable[[list[tuple[str, str]] | None], Awaitable[Any]]


async def refused(call: Call, md: list[tuple[str, str]] | None) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call(md)
    except grpc.aio.AioRpcError as err:
        return err.code(), reason_of(err), err.details() or ""
    raise AssertionError("the call was not refused")


async def assert_bad_credentials_refused(settings: Settings, user: ApiUser, calls: dict[str, Call]) -> None:
    for rpc, call in calls.items():
        for name, token in bad_tokens(settings, user).items():
            code, reason, _ = await refused(call, None if token is None else bearer(token))
            assert code == grpc.StatusCode.UNAUTHENTICATED, (rpc, name, code)
            assert reason.startswith("USER_TOKEN"), (rpc, name, reason)


async def assert_role_refused(user: ApiUser, calls: dict[str, Call]) -> None:
    for rpc, call in calls.items():
        code, reason, _ = await refused(call, user.metadata)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED"), rpc
