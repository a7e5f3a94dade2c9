"""`trace sql check` (the gate, offline) and `trace query` (through the Query Service)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import grpc

from trace_platform.cli.common import addr_option, data_dir_option, run
from trace_platform.clients.query import QueryClient, QueryRows
from trace_platform.core.sql_gate import SqlRejected, check_sql
from trace_platform.lite import credentials


@click.group("sql")
def sql_group() -> None:
    """The SQL gate."""


@sql_group.command("check")
@click.argument("sql")
def sql_check(sql: str) -> None:
    """Run the gate: prints `ok` (exit 0) or the reason code (exit 1)."""
    try:
        check_sql(sql)
    except SqlRejected as exc:
        click.echo(exc.reason)
        sys.exit(1)
    click.echo("ok")


def user_token(data_dir: Path) -> str:
    """TRACE_USER_TOKEN, else the Lite user token `trace lite up` left in the data directory."""
    token = os.environ.get("TRACE_USER_TOKEN")
    if token:
        return token
    creds = credentials.load(data_dir)
    if creds is None or not creds.user_token:
        raise click.ClickException(f"no user token: start `trace lite up` or set TRACE_USER_TOKEN ({data_dir})")
    return creds.user_token


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    return str(value)


def render_table(result: QueryRows) -> str:
    headers = [name for name, _ in result.columns]
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    count = f"({len(cells)} row{'s' if len(cells) != 1 else ''}{', truncated' if result.truncated else ''})"
    return "\n".join([*out, count])


@click.command("query")
@click.option("--dataset", required=True, help="Registry name, for example mychain.blocks.")
@click.argument("sql")
@click.option("--limit", type=int, default=0, help="Rows to return (default 1000, at most 10000).")
@click.option("--json", "as_json", is_flag=True, help="Print columns and rows as JSON.")
@addr_option
@data_dir_option
def query(dataset: str, sql: str, limit: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """Run a read-only SQL query over a dataset (the relation is called `dataset`)."""
    token = user_token(data_dir)

    async def go() -> QueryRows:
        async with grpc.aio.insecure_channel(addr) as channel:
            return await QueryClient(channel, user_token=token).query(dataset, sql, limit)

    result = run(go())
    if as_json:
        doc = {
            "columns": [{"name": n, "type": t} for n, t in result.columns],
            "rows": result.rows,
            "truncated": result.truncated,
            "dataset_version": result.dataset_version,
        }
        click.echo(json.dumps(doc, default=_cell))
    else:
        click.echo(render_table(result))
