"""`trace datasets list|get|publish`: the org's dataset registry (user API)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from trace_platform.cli.api_call import call_api, echo_json, when
from trace_platform.cli.common import CliUsageError, addr_option, data_dir_option

if TYPE_CHECKING:
    from trace_platform.core.dataset_registry import DatasetInfo

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("datasets")
def datasets_group() -> None:
    """List, inspect and name the org's datasets."""


def _line(d: DatasetInfo) -> str:
    names = f" ({', '.join(d.published_names)})" if d.published_names else ""
    span = f"[{d.range_start}, {d.range_end})" if d.range_start is not None else "-"
    return f"{d.name}{names}  {d.kind}  versions={d.version_count}  range={span}  current={d.current_version or '-'}"


@datasets_group.command("list")
@click.option("--page-size", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
@addr_option
@data_dir_option
def list_datasets(page_size: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """Every dataset of the org (all pages)."""
    from trace_platform.clients.api.datasets import DatasetsClient

    async def go(channel, token):  # type: ignore[no-untyped-def]
        return [d async for d in DatasetsClient(channel, token=token).iterate(page_size=page_size)]

    found = call_api(addr, data_dir, go)
    if as_json:
        echo_json(found)
        return
    for d in found:
        click.echo(_line(d))
    if not found:
        click.echo("no datasets")


@datasets_group.command("get")
@click.argument("name")
@json_option
@addr_option
@data_dir_option
def get_dataset(name: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """One dataset by name, with its columns."""
    from trace_platform.clients.api.datasets import DatasetsClient

    d = call_api(addr, data_dir, lambda ch, token: DatasetsClient(ch, token=token).get(name))
    if as_json:
        echo_json(d)
        return
    click.echo(_line(d))
    click.echo(f"id {d.dataset_id}  published={str(d.published).lower()}  updated {when(d.updated_at)}")
    if d.chain_sync_stream is not None:
        click.echo(f"source chain_sync {d.chain_sync_stream.sync_name}.{d.chain_sync_stream.dataset_key}")
    for c in d.columns:
        click.echo(f"  {c.name}  {c.type}{'' if c.nullable else ' not null'}{'  [pii]' if c.pii else ''}")


@datasets_group.command("publish")
@click.argument("name")
@click.option("--chain-sync", "stream", metavar="SYNC.DATASET_KEY", help="A chain_sync stream, e.g. mainnet.blocks.")
@click.option("--dag-output", "output", metavar="DAG/JOB/INDEX", help="A DAG job's output.")
@json_option
@addr_option
@data_dir_option
def publish_dataset(
    name: str, stream: str | None, output: str | None, as_json: bool, addr: str, data_dir: Path
) -> None:
    """Give a chain_sync stream or a DAG output the name NAME in the org's registry."""
    from trace_platform.clients.api.datasets import ChainSyncStreamSource, DagOutputSource, DatasetsClient

    source: ChainSyncStreamSource | DagOutputSource
    if bool(stream) == bool(output):
        raise CliUsageError("give exactly one of --chain-sync and --dag-output")
    if stream:
        sync, dot, key = stream.partition(".")
        if not dot:
            raise CliUsageError("--chain-sync is SYNC.DATASET_KEY, e.g. mainnet.blocks")
        source = ChainSyncStreamSource(sync, key)
    else:
        assert output is not None
        parts = output.split("/")
        if len(parts) != 3 or not parts[2].isdigit():
            raise CliUsageError("--dag-output is DAG/JOB/INDEX, e.g. transfers/flag/0")
        source = DagOutputSource(parts[0], parts[1], int(parts[2]))
    result = call_api(addr, data_dir, lambda ch, token: DatasetsClient(ch, token=token).publish(name, source))
    if as_json:
        echo_json(result)
        return
    verb = "published" if result.created else "already published"
    click.echo(f"{name}: {verb} ({result.dataset.name}, id {result.dataset.dataset_id})")
