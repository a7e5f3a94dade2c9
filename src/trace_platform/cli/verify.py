"""`trace verify NAME`: compare a chain_sync job's published data with its node.

Exit 0 when clean, 1 when any difference is found (every one is printed, or given with
``--json``); errors (unknown job, no blocks stream, range too large) exit as other
commands' errors do.
"""

from __future__ import annotations

from pathlib import Path

import click

from trace_platform.cli.chain_sync import _with_client, org_option
from trace_platform.cli.common import addr_option, data_dir_option
from trace_platform.views.output import dumps, message_dict


@click.command("verify")
@click.argument("name")
@click.option("--from", "from_block", type=click.IntRange(min=0), default=None, help="First block (inclusive).")
@click.option("--to", "to_block", type=click.IntRange(min=1), default=None, help="End block (exclusive).")
@click.option("--json", "as_json", is_flag=True)
@org_option
@addr_option
@data_dir_option
def verify(
    name: str, from_block: int | None, to_block: int | None, as_json: bool, org: str, addr: str, data_dir: Path
) -> None:
    """Check block hashes, parent links, transaction and log counts and block presence against the node
    (default: the last 10,000 published blocks; at most 10,000 per call)."""
    resp = _with_client(addr, data_dir, lambda c: c.verify(org, name, from_block, to_block))
    if as_json:
        click.echo(dumps(message_dict(resp)))
    else:
        span = f"[{resp.from_block}, {resp.to_block})"
        if not resp.difference_count:
            click.echo(f"{name}: {span} matches the node ({resp.blocks_checked} blocks)")
        else:
            click.echo(f"{name}: {span}: {resp.difference_count} difference(s)")
            for d in resp.differences:
                click.echo(
                    f"  block {d.block_number}  {d.dataset_key}  {d.field}  "
                    f"published {d.published or '-'}  node {d.node or '-'}"
                )
            if resp.difference_count > len(resp.differences):
                click.echo(f"  ... {resp.difference_count - len(resp.differences)} more (narrow --from/--to)")
    if resp.difference_count:
        raise SystemExit(1)
