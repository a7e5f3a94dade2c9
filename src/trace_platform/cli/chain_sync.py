"""`trace apply`, `trace pause`, `trace resume`, `trace status`: chain_sync jobs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from trace_platform.cli.common import CliError, addr_option, admin_token, data_dir_option, run
from trace_platform.core.defaults import LITE_ORG_ID
from trace_platform.views.live_status import render_status
from trace_platform.views.output import dumps, message_dict
from trace_platform.views.rpc_endpoints import render_endpoints

if TYPE_CHECKING:  # grpc and the client are imported when a command runs
    from trace_platform.clients.chain_sync import ChainSyncClient, pb

T = TypeVar("T")
org_option = click.option("--org", envvar="TRACE_ORG_ID", default=LITE_ORG_ID, show_default="the Lite org")


def _with_client(addr: str, data_dir: Path, fn: Callable[[ChainSyncClient], Awaitable[T]]) -> T:
    token = admin_token(data_dir)
    from trace_platform.clients.chain_sync import ChainSyncClient
    from trace_platform.clients.channel import user_channel

    async def go() -> T:
        async with user_channel(addr) as channel:
            return await fn(ChainSyncClient(channel, admin_token=token))

    return run(go(), addr)


@click.command("apply")
@click.option("-f", "--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@org_option
@addr_option
@data_dir_option
def apply(path: Path, org: str, addr: str, data_dir: Path) -> None:
    """Create or update a chain_sync job from YAML (idempotent)."""
    text = path.read_text()
    resp = _with_client(addr, data_dir, lambda c: c.apply(org, text))
    from trace_platform.clients.chain_sync import pb

    outcome = pb.ApplyOutcome.Name(resp.outcome).removeprefix("APPLY_OUTCOME_").lower()
    click.echo(f"{resp.name}: {outcome} (yaml_hash {resp.yaml_hash[:12]})")


@click.command("pause")
@click.argument("name")
@org_option
@addr_option
@data_dir_option
def pause(name: str, org: str, addr: str, data_dir: Path) -> None:
    """Stop planning new ranges (ranges in flight finish)."""
    _with_client(addr, data_dir, lambda c: c.pause(org, name))
    click.echo(f"{name}: paused")


@click.command("resume")
@click.argument("name")
@org_option
@addr_option
@data_dir_option
def resume(name: str, org: str, addr: str, data_dir: Path) -> None:
    """Continue planning where the job stopped."""
    _with_client(addr, data_dir, lambda c: c.resume(org, name))
    click.echo(f"{name}: resumed")


@click.command("status")
@click.argument("name", required=False, default="")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--watch",
    "watching",
    is_flag=True,
    help="Keep showing it (live on a terminal, with blocks/s and time left) until every job is complete.",
)
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True, help="--watch poll, s.")
@org_option
@addr_option
@data_dir_option
def status(name: str, as_json: bool, watching: bool, interval: float, org: str, addr: str, data_dir: Path) -> None:
    """Per stream: synced to / planned to (end-exclusive), in flight, done, failed ranges, last error, head."""
    if watching and not as_json:
        try:
            jobs = _with_client(addr, data_dir, lambda c: _watch(c, org, name, interval))
        except KeyboardInterrupt:
            raise SystemExit(130) from None
        endpoints: list[pb.RpcEndpointStatus] = []
    else:
        response = _with_client(addr, data_dir, lambda c: c.status_response(org, name))
        jobs, endpoints = list(response.jobs), list(response.rpc_endpoints)
    if name and not jobs:
        # The RPC answers a filter with the jobs matching it (none); a named job that is
        # not there is an error here, as it is for pause and resume.
        raise CliError(f"CHAIN_SYNC_NOT_FOUND: no chain_sync job {name!r} in org {org}")
    if as_json:
        click.echo(
            dumps({"jobs": [message_dict(j) for j in jobs], "rpc_endpoints": [message_dict(e) for e in endpoints]})
        )
    elif not watching:
        click.echo(render_status(jobs) + render_endpoints(endpoints))


async def _watch(client: ChainSyncClient, org: str, name: str, interval: float) -> list[pb.ChainSyncStatus]:
    """The live view until every job is complete (or none matches ``name``)."""
    from trace_platform.views.live_status import ProgressView, watch

    with ProgressView() as view:
        jobs = await watch(
            lambda: client.status(org, name), view, interval, until=lambda jobs: all(j.completed for j in jobs)
        )
    return list(jobs)


CHAIN_SYNC_COMMANDS = (apply, pause, resume, status)
