"""How a CLI command calls the user API: the user token (TRACE_USER_TOKEN, else the one
`trace lite up` left in the data directory), one channel, typed errors printed once."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from trace_platform.cli.common import rpc_error, user_token
from trace_platform.core.errors import TraceError

if TYPE_CHECKING:
    import grpc

T = TypeVar("T")
# Where a refusal has an obvious next step.
HINTS = {
    "DESTINATION_FORBIDDEN": "webhooks must be https to a public host; the server's TRACE_WEBHOOK_ALLOW_HTTP and "
    "TRACE_WEBHOOK_ALLOWED_NETWORKS widen that",
    "DATASET_NOT_FOUND": "`trace datasets list` shows the org's dataset names",
    "ALERT_NOT_FOUND": "`trace alerts list` shows the org's alert ids",
    "SOURCE_NOT_FOUND": "`trace status` shows the chain_sync jobs and their streams",
}


def call_api(addr: str, data_dir: Path, fn: Callable[[grpc.aio.Channel, str], Awaitable[T]]) -> T:
    token = user_token(data_dir)
    from trace_platform.clients.channel import insecure_channel

    async def go() -> T:
        async with insecure_channel(addr) as channel:
            return await fn(channel, token)

    import asyncio

    try:
        return asyncio.run(go())
    except TraceError as exc:
        err = rpc_error(exc, addr)
        err.hint = err.hint or HINTS.get(exc.reason, "")
        raise err from None


def as_dict(value: Any) -> Any:
    """A result dataclass (or a list of them) as JSON-ready data."""
    if isinstance(value, list | tuple):
        return [as_dict(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def echo_json(value: Any) -> None:
    from trace_platform.views.output import dumps

    click.echo(dumps(as_dict(value), indent=2))


def when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"
