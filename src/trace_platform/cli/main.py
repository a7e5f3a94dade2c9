"""Entry point of the `trace` command.

The command tree is lazy: a command's module is imported only when that command (or
`--help`, which lists them all) runs, and command modules import nothing heavy at module
level (no grpc, DuckDB, asyncpg, pyarrow, servers or app): each command imports what it
uses inside its function. tests/unit/test_cli_imports.py guards this; bench/cli_startup.py
measures it.
"""

from __future__ import annotations

import importlib

import click

# name -> "module:attribute"; --help lists them in this order's sorted form.
COMMANDS = {
    "alerts": "trace_platform.cli.alerts:alerts_group",
    "apply": "trace_platform.cli.chain_sync:apply",
    "bundle": "trace_platform.cli.bundle:bundle_group",
    "config": "trace_platform.cli.config:config_group",
    "dag": "trace_platform.cli.dag:dag_group",
    "datasets": "trace_platform.cli.datasets:datasets_group",
    "db": "trace_platform.cli.services:db",
    "demo": "trace_platform.cli.tasks:demo",
    "dispatcher": "trace_platform.cli.services:dispatcher",
    "dlq": "trace_platform.cli.dlq:dlq_group",
    "keys": "trace_platform.cli.services:keys",
    "lite": "trace_platform.cli.lite:lite",
    "pause": "trace_platform.cli.chain_sync:pause",
    "query": "trace_platform.cli.query:query",
    "resume": "trace_platform.cli.chain_sync:resume",
    "serve": "trace_platform.cli.serve:serve",
    "sql": "trace_platform.cli.query:sql_group",
    "status": "trace_platform.cli.chain_sync:status",
    "task": "trace_platform.cli.tasks:task_group",
    "verify": "trace_platform.cli.verify:verify",
    "worker": "trace_platform.cli.services:worker",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported by name on first use."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._lazy:
            module, _, attr = self._lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="trace-platform", prog_name="trace", message="%(prog)s %(version)s")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    default="WARNING",
    envvar="TRACE_LOG_LEVEL",
    show_default=True,
)
def cli(log_level: str) -> None:
    """Trace: sync, query and alert on blockchain data."""
    from trace_platform.servers.common.logs import configure_logging

    configure_logging(log_level.upper())


def main() -> None:
    # click itself ends quietly when stdout's reader leaves (`trace query --format csv | head`).
    cli(prog_name="trace")
