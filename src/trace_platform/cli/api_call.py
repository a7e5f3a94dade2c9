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
def call_api(addr: str, data_dir: Path, fn: Callable[[grpc.aio.Channel, str], Awaitable[T]]) -> T:
    token = user_token(data_dir)
    from trace_platform.clients.channel import user_channel

    async def go() -> T:
        async with user_channel(addr) as channel:
            return await fn(channel, token)

    import asyncio

    try:
        return asyncio.run(go())
    except TraceError as exc:
        raise rpc_error(exc, addr) from None


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
