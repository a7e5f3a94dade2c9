"""`trace sql check` (the gate, offline) and `trace query` (through the Query Service).

`sql check` imports the gate and sqlglot only; `query` imports grpc and the Query client
when it runs, and pyarrow only for csv/parquet.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from trace_platform.cli.common import CliError, CliUsageError, addr_option, data_dir_option, run
from trace_platform.views.output import BatchWriter, render_json, render_table

if TYPE_CHECKING:
    from trace_platform.clients.api.query import ApiQueryClient, QueryRows

FORMATS = ("table", "json", "csv", "parquet")


@click.group("sql")
def sql_group() -> None:
    """The SQL gate."""


@sql_group.command("check")
@click.argument("sql")
def sql_check(sql: str) -> None:
    """Run the gate: prints `ok` (exit 0) or the reason code (exit 1)."""
    from trace_platform.core.sql_gate import SqlRejected, check_sql

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
    from trace_platform.lite import credentials

    creds = credentials.load(data_dir)
    if creds is None or not creds.user_token:
        raise CliError(
            f"no user token in {data_dir}", hint="start `trace lite up` or set TRACE_USER_TOKEN (or --data-dir)"
        )
    return creds.user_token


def parse_datasets(values: tuple[str, ...]) -> dict[str, str]:
    """``--dataset`` values: ``RELATION=NAME`` attaches NAME as RELATION, a bare NAME as the
    relation ``dataset``. The server checks the names; a relation given twice is refused here."""
    out: dict[str, str] = {}
    for value in values:
        relation, sep, name = value.partition("=")
        relation, name = (relation.strip(), name.strip()) if sep else ("dataset", value.strip())
        if not relation or not name:
            raise CliUsageError(f"--dataset {value!r}: expected NAME or RELATION=NAME")
        if relation in out:
            raise CliUsageError(f"--dataset: relation {relation!r} is given twice")
        out[relation] = name
    return out


@click.command("query")
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    help="NAME (the relation `dataset`) or RELATION=NAME, for example txs=mychain.transactions; repeatable.",
)
@click.argument("sql")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table and json: up to --limit rows (Query); csv and parquet: the whole result, streamed (QueryArrow).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Rows to return (table/json: default 1000, at most 10000; csv/parquet: default all).",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write to FILE, not stdout."
)
@addr_option
@data_dir_option
def query(
    datasets: tuple[str, ...],
    sql: str,
    fmt: str,
    limit: int | None,
    as_json: bool,
    output: Path | None,
    addr: str,
    data_dir: Path,
) -> None:
    """Run a read-only SQL query over datasets, each under its relation name:
    `trace query --dataset txs=chain.transactions --dataset logs=chain.logs "SELECT ..."`."""
    fmt = "json" if as_json else fmt
    dataset = parse_datasets(datasets)
    if fmt == "parquet" and output is None:
        raise CliUsageError("--format parquet needs --output FILE")
    if output is not None and not output.parent.is_dir():
        raise CliUsageError(f"--output {output}: no directory {output.parent}")
    token = user_token(data_dir)
    try:
        _answer(dataset, sql, fmt, limit, output, addr, token)
    except OSError as exc:  # the output file: permissions, a full disk
        if output is None:
            raise  # stdout's reader left: click ends quietly
        raise CliError(f"--output {output}: {exc.strerror or exc}") from None


def _answer(
    dataset: dict[str, str], sql: str, fmt: str, limit: int | None, output: Path | None, addr: str, token: str
) -> None:
    from trace_platform.clients.api.query import ApiQueryClient
    from trace_platform.clients.channel import user_channel

    if fmt in ("csv", "parquet"):

        async def stream() -> int:
            async with user_channel(addr) as channel:
                return await _write_batches(ApiQueryClient(channel, token=token), dataset, sql, fmt, limit, output)

        rows = run(stream(), addr, sql, tuple(dataset))
        if output is not None:
            click.echo(f"{rows} row{'s' if rows != 1 else ''} written to {output}", err=True)
        return

    async def go() -> QueryRows:
        async with user_channel(addr) as channel:
            return await ApiQueryClient(channel, token=token).query(dataset, sql, limit or 0)

    result = run(go(), addr, sql, tuple(dataset))
    text = render_json(result) if fmt == "json" else render_table(result)
    if output is None:
        click.echo(text)
    else:
        with _replacing(output) as sink:
            sink.write(text.encode() + b"\n")


async def _write_batches(
    client: ApiQueryClient, dataset: dict[str, str], sql: str, fmt: str, limit: int | None, output: Path | None
) -> int:
    """Stream the result into ``output`` (or stdout) batch by batch; the rows written."""
    with _replacing(output) if output is not None else contextlib.nullcontext(sys.stdout.buffer) as sink:
        writer = BatchWriter(fmt, sink)
        left = limit
        async with contextlib.aclosing(client.query_arrow_batches(dataset, sql)) as batches:
            async for batch in batches:
                if left is not None:
                    batch = batch.slice(0, left)
                    left -= batch.num_rows
                writer.write(batch)
                if left == 0:
                    break  # closing the stream cancels the rest of the query
        writer.close()
        return writer.rows


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces ``path`` only once everything was written (a failed
    query leaves no half-written file behind); mode as the umask says, like any new file."""
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as sink:
            yield sink
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
