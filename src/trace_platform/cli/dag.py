"""`trace dag deploy|versions|activate|rollback`: DAG versions of the org (user API)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trace_platform.cli.api_call import call_api, echo_json, when
from trace_platform.cli.common import CliUsageError, addr_option, data_dir_option

if TYPE_CHECKING:
    from trace_platform.clients.api.dags import Activated, DagVersionInfo

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("dag")
def dag_group() -> None:
    """Deploy, list, activate and roll back DAG versions."""


def _line(v: DagVersionInfo) -> str:
    mark = "  (active)" if v.active else ""
    return f"{v.dag} v{v.number}  {v.id}  sha256 {v.yaml_sha256[:12]}  {when(v.created_at)}{mark}"


@dag_group.command("deploy")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The DAG YAML document ('-' reads stdin).",
)
@json_option
@addr_option
@data_dir_option
def deploy(path: Path, as_json: bool, addr: str, data_dir: Path) -> None:
    """Validate and store a DAG version (the same YAML again answers the same version)."""
    from trace_platform.clients.api.dags import DagsClient

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliUsageError(f"cannot read {path}: {type(exc).__name__}") from None
    done = call_api(addr, data_dir, lambda ch, token: DagsClient(ch, token=token).deploy(text))
    if as_json:
        echo_json(done)
        return
    verb = "unchanged, already deployed as" if done.already_existed else "deployed"
    click.echo(f"{verb} {_line(done.version)}")
    if not done.version.active:
        click.echo(f"activate it with: trace dag activate {done.version.dag} {done.version.number}")


@dag_group.command("versions")
@click.argument("name")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
@addr_option
@data_dir_option
def versions(name: str, page_size: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """Every version of the DAG NAME, in deploy order (all pages)."""
    from trace_platform.clients.api.dags import DagsClient

    async def go(channel, token):  # type: ignore[no-untyped-def]
        return [v async for v in DagsClient(channel, token=token).iterate_versions(name, page_size=page_size)]

    found = call_api(addr, data_dir, go)
    if as_json:
        echo_json(found)
        return
    for v in found:
        click.echo(_line(v))


def _activated(done: Activated, as_json: bool) -> None:
    if as_json:
        echo_json(done)
        return
    if not done.changed:
        click.echo(f"already active: {_line(done.version)}")
        return
    was = f" (was {done.previous_version_id})" if done.previous_version_id else ""
    click.echo(f"active: {_line(done.version)}{was}")


@dag_group.command("activate")
@click.argument("name")
@click.argument("version")
@json_option
@addr_option
@data_dir_option
def activate(name: str, version: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """Make VERSION (a number or an id) the active version of the DAG NAME."""
    from trace_platform.clients.api.dags import DagsClient

    done = call_api(addr, data_dir, lambda ch, token: DagsClient(ch, token=token).activate(name, version))
    _activated(done, as_json)


@dag_group.command("rollback")
@click.argument("name")
@json_option
@addr_option
@data_dir_option
def rollback(name: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """Activate the version that was active before the current one."""
    from trace_platform.clients.api.dags import DagsClient

    done = call_api(addr, data_dir, lambda ch, token: DagsClient(ch, token=token).rollback(name))
    _activated(done, as_json)
