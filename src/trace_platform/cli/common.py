"""What every CLI command that talks to a server shares: address and credentials."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from trace_platform.core.config import DEFAULT_ADDR, default_data_dir
from trace_platform.core.errors import TraceError
from trace_platform.lite import credentials

T = TypeVar("T")

addr_option = click.option(
    "--addr", envvar="TRACE_ADDR", default=DEFAULT_ADDR, show_default=True, help="Server address (TRACE_ADDR)."
)
data_dir_option = click.option(
    "--data-dir",
    envvar="TRACE_DATA_DIR",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="~/.trace/lite",
    help="Lite data directory (TRACE_DATA_DIR).",
)


def admin_token(data_dir: Path) -> str:
    """TRACE_ADMIN_TOKEN, else the token `trace lite up` left in the data directory."""
    token = os.environ.get("TRACE_ADMIN_TOKEN")
    if token:
        return token
    creds = credentials.load(data_dir)
    if creds is None:
        raise click.ClickException(f"no credentials: start `trace lite up` or set TRACE_ADMIN_TOKEN ({data_dir})")
    return creds.admin_token


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except TraceError as exc:
        raise click.ClickException(f"{exc.reason}: {exc.message}") from None
