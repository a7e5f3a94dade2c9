"""`trace dlq list|replay`: batches of alert events the Sink dead-lettered, through the
SinkService's admin RPCs (admin token: TRACE_ADMIN_TOKEN or the Lite data directory's)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from trace_platform.cli.common import addr_option, admin_token, data_dir_option, run

if TYPE_CHECKING:
    from trace_platform.clients.sink import SinkClient

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _with_sink(addr: str, data_dir: Path, fn: Callable[[SinkClient], Awaitable[T]]) -> T:
    token = admin_token(data_dir)
    from trace_platform.clients.channel import user_channel
    from trace_platform.clients.sink import SinkClient

    async def go() -> T:
        async with user_channel(addr) as channel:
            return await fn(SinkClient(channel, admin_token=token))

    return run(go(), addr)


@click.group("dlq")
def dlq_group() -> None:
    """Dead-lettered alert batches: list and replay (admin)."""


@dlq_group.command("list")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@addr_option
@data_dir_option
def list_dead_letters(limit: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """Dead letters, oldest first (replayed ones included, with when)."""
    from trace_platform.views.output import dumps, message_dict

    async def go(client: SinkClient) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while len(out) < limit:
            page = await client.list_dead_letters(page_size=min(limit - len(out), 1000), page_token=token)
            out += [message_dict(d) for d in page.dead_letters]
            token = page.next_page_token
            if not token:
                break
        return out

    found = _with_sink(addr, data_dir, go)
    if as_json:
        click.echo(dumps(found, indent=2))
        return
    for d in found:
        replayed = f"replayed {d['replayed_at']}" if d.get("replayed_at") else "not replayed"
        click.echo(
            f"{d['dead_letter_id']}  {d['reason']}  row {d['row_number']}  task {d['task_id']}"
            f"  org {d['org_id']}  {d['created_at']}  {replayed}"
        )
    if not found:
        click.echo("no dead letters")


@dlq_group.command("replay")
@click.argument("dead_letter_id")
@json_option
@addr_option
@data_dir_option
def replay(dead_letter_id: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """Re-read the batch (fixed in place) and apply it, all or nothing."""
    from trace_platform.views.output import dumps, message_dict

    resp = _with_sink(addr, data_dir, lambda c: c.replay(dead_letter_id))
    if as_json:
        click.echo(dumps(message_dict(resp)))
        return
    click.echo(f"{dead_letter_id}: replayed, {resp.rows_upserted} new events of {resp.rows_in_batch} rows")
