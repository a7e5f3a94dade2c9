"""`trace serve ROLE [ROLE...]`: the cluster profile's process, serving only those roles
(their gRPC services, plus health and reflection) on one port.

The roles are imported inside the function, so `trace --help` stays light."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import click

from trace_platform.cli.common import CliError, CliUsageError, load_settings
from trace_platform.cli.lite import listen_option

if TYPE_CHECKING:
    from trace_platform.core.config import Settings

# Kept equal to trace_platform.roles.host.ROLES (tests/integration/test_roles checks), so
# listing them here does not import the servers.
ROLE_NAMES = ("dispatcher", "query", "invoker", "sink", "delivery", "api", "worker")


@click.command()
@click.argument("roles", nargs=-1, required=True, type=click.Choice(ROLE_NAMES))
@listen_option
@click.option("--migrate/--no-migrate", default=False, help="Apply pending schema migrations first.")
def serve(roles: tuple[str, ...], listen: str, migrate: bool) -> None:
    """Serve ROLES in this process (needs TRACE_DATABASE_URL; a role that needs another
    one running elsewhere needs its address: TRACE_DISPATCHER_ADDR, TRACE_QUERY_ADDR)."""
    run_roles(roles, listen, migrate=migrate, label=" ".join(roles))


def run_roles(
    roles: tuple[str, ...], listen: str, *, migrate: bool, label: str, settings: Settings | None = None
) -> None:
    """Start ``roles``, print '<label> serving on ADDR' on stderr, serve until SIGTERM/SIGINT.
    ``settings``: already loaded (default: from the environment); ``listen`` wins."""
    import uvloop

    from trace_platform.core.errors import ErrorKind, TraceError
    from trace_platform.roles.host import host_roles
    from trace_platform.servers.common.server import wait_for_shutdown_signal

    settings = replace(settings or load_settings(), listen=listen)

    async def main() -> None:
        try:
            running = await host_roles(settings, roles, migrate=migrate)
        except TraceError as exc:
            if exc.kind in (ErrorKind.FAILED_PRECONDITION, ErrorKind.INVALID_ARGUMENT):
                raise CliUsageError(exc.message) from None
            raise CliError(exc.message) from None
        except OSError as exc:
            raise CliError(f"cannot start {' '.join(roles)}: {exc}") from None
        click.echo(f"{label} serving on {running.addr}", err=True)
        try:
            await wait_for_shutdown_signal()
        finally:
            await running.stop()

    uvloop.run(main())
