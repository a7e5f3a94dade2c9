"""What every CLI command that talks to a server shares: address, credentials, errors.

Imports stay light here (click, the standard library, core.config/errors): every command
module imports this one, and `trace --help` imports every command module.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from trace_platform.core.defaults import DEFAULT_ADDR, default_data_dir
from trace_platform.core.errors import ErrorKind, TraceError

if TYPE_CHECKING:
    from trace_platform.core.config import Settings

T = TypeVar("T")


class CliError(click.ClickException):
    """A failure printed as ``error: <message>`` (plus ``hint: ...``), with its exit code.

    RPC failures carry their reason code once, at the start of the message."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
        if self.hint:
            click.echo(f"hint: {self.hint}", err=True)


class CliUsageError(CliError):
    """Wrong use (a bad environment value, options that do not go together): exit 2, as click's own."""

    exit_code = 2


def parse_addr(value: str, *, listen: bool = False) -> str:
    """``host:port`` with a port in 1..65535 (0 too for a listen address: any free port);
    an IPv6 host in brackets (``[::1]:50051``).

    A bare host would make gRPC dial its default port (443), so it is refused."""
    if value.startswith("["):  # [v6]:port
        host, bracket, rest = value[1:].partition("]")
        port = rest[1:]
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{value!r} has no port: use host:port, e.g. 127.0.0.1:50051")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{value!r}: not an IPv6 address in brackets") from None
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} has no port: use host:port, e.g. 127.0.0.1:50051")
        if ":" in host:
            raise ValueError(f"{value!r}: an IPv6 address goes in brackets, e.g. [::1]:50051")
    lowest = 0 if listen else 1
    if not (port.isascii() and port.isdigit()) or not lowest <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be a number in {lowest}..65535")
    return value


def _addr(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The --addr/TRACE_ADDR given, else where the `trace lite up` of the data directory
    listens (its credentials file), else the default address."""
    if value is None:
        return lite_addr(ctx.params.get("data_dir") or default_data_dir())
    try:
        return parse_addr(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def lite_addr(data_dir: Path) -> str:
    from trace_platform.lite import credentials

    try:
        creds = credentials.load(data_dir)
    except (OSError, ValueError, TypeError):  # unreadable or not ours: the default, and the call says why
        creds = None
    return creds.addr if creds is not None and creds.addr else DEFAULT_ADDR


addr_option = click.option(
    "--addr",
    envvar="TRACE_ADDR",
    default=None,
    show_default=f"the running `trace lite up`, else {DEFAULT_ADDR}",
    callback=_addr,
    help="Server address host:port (TRACE_ADDR).",
)
# Eager, so --addr (which reads the data directory's credentials) sees it whatever the order.
data_dir_option = click.option(
    "--data-dir",
    envvar="TRACE_DATA_DIR",
    type=click.Path(path_type=Path),
    default=default_data_dir,
    show_default="~/.trace/lite",
    is_eager=True,
    help="Lite data directory (TRACE_DATA_DIR).",
)


def load_settings() -> Settings:
    """Settings from the environment; an unusable value stops here: ``error: TRACE_X: ...``, exit 2."""
    from trace_platform.core.config import SettingsError, settings_from_env

    try:
        return settings_from_env()
    except SettingsError as exc:
        raise CliUsageError(f"{exc.variable}: {exc.problem}") from None


def admin_token(data_dir: Path) -> str:
    """TRACE_ADMIN_TOKEN, else the token `trace lite up` left in the data directory."""
    return _token("TRACE_ADMIN_TOKEN", "admin_token", data_dir)


def user_token(data_dir: Path) -> str:
    """TRACE_USER_TOKEN, else the Lite admin user's token `trace lite up` left in the data directory."""
    return _token("TRACE_USER_TOKEN", "user_token", data_dir)


def _token(variable: str, field: str, data_dir: Path) -> str:
    token = os.environ.get(variable)
    if token:
        return token
    from trace_platform.lite import credentials

    creds = credentials.load(data_dir)
    value = getattr(creds, field, "") if creds is not None else ""
    if not value:
        raise CliError(f"no credentials in {data_dir}", hint=f"start `trace lite up` or set {variable} (or --data-dir)")
    return str(value)


# Where a refusal has an obvious next step.
HINTS = {
    "DESTINATION_FORBIDDEN": "webhooks must be https to a public host; the server's TRACE_WEBHOOK_ALLOW_HTTP and "
    "TRACE_WEBHOOK_ALLOWED_NETWORKS widen that",
    "DATASET_NOT_FOUND": "`trace datasets list` shows the org's dataset names",
    "ALERT_NOT_FOUND": "`trace alerts list` shows the org's alert ids",
    "DAG_NOT_FOUND": "`trace dag versions NAME` needs a DAG deployed with `trace dag deploy -f FILE`",
    "BUNDLE_NOT_FOUND": "`trace bundle upload FILE` answers a bundle's id",
    "SOURCE_NOT_FOUND": "`trace status` shows the chain_sync jobs and their streams",
    "ROLE_REQUIRED": "your role in this org does not allow this call (viewer < editor < admin)",
}


def rpc_error(exc: TraceError, addr: str, sql: str | None = None, relations: tuple[str, ...] = ()) -> CliError:
    """A typed client error as the CLI prints it: reason code once, message, and a hint.
    ``sql`` and ``relations``, when the call sent them, let a gate refusal say more: which
    function (found here, from the caller's own text: the server never echoes it) and
    which relation names the query may use."""
    hint = HINTS.get(exc.reason, "")
    if exc.reason in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        hint = f"is `trace lite up` running? (address {addr}; set --addr or TRACE_ADDR)"
    elif exc.kind is ErrorKind.UNAUTHENTICATED:
        hint = "check TRACE_ADMIN_TOKEN / TRACE_USER_TOKEN, or --data-dir of the running `trace lite up`"
    elif exc.reason == "DISALLOWED_RELATION":
        names = relations or tuple(n for n in exc.metadata.get("relations", "").split(",") if n)
        hint = f"the query may read the relations {', '.join(names)} (--dataset REL=NAME) and its own CTEs"
    elif exc.reason == "DISALLOWED_FUNCTION" and sql is not None:
        from trace_platform.core.sql_gate import refused_function

        function = refused_function(sql, allowed_relations=frozenset(relations or ("dataset",)))
        allowed = "docs/sql_gate.md lists the functions allowed"
        hint = f"{function}() is not an allowed function; {allowed}" if function else allowed
    message = exc.message if exc.message.startswith(exc.reason) else f"{exc.reason}: {exc.message}"
    return CliError(message, hint=hint)


def run(
    coro: Coroutine[Any, Any, T], addr: str = DEFAULT_ADDR, sql: str | None = None, relations: tuple[str, ...] = ()
) -> T:
    import asyncio

    try:
        return asyncio.run(coro)
    except TraceError as exc:
        raise rpc_error(exc, addr, sql, relations) from None
