"""`trace lite up`: the whole platform on one machine, in the foreground."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trace_platform.cli.common import data_dir_option, load_settings, parse_addr
from trace_platform.cli.data_lock import hold_data_dir

if TYPE_CHECKING:
    from trace_platform.app import RunningPlatform
    from trace_platform.core.config import Settings


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return parse_addr(value, listen=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


listen_option = click.option(
    "--listen", envvar="TRACE_LISTEN", default="127.0.0.1:50051", show_default=True, callback=_listen
)


@click.group()
def lite() -> None:
    """The Lite profile: everything on one machine."""


@lite.command("up")
@listen_option
@data_dir_option
@click.option(
    "--demo",
    "with_demo",
    is_flag=True,
    help="Start a local anvil chain, sync it with Cryo, query it, run a demo task, then stop.",
)
def lite_up(listen: str, data_dir: Path, with_demo: bool) -> None:
    """Start the whole platform in the foreground (Ctrl-C stops it)."""
    settings = replace(load_settings(), listen=listen, data_dir=data_dir)
    # One `trace lite up` per data directory: held until this process exits.
    with hold_data_dir(data_dir):
        if with_demo:
            _lite_demo(settings)
        else:
            _lite_up(settings)


def _lite_up(settings: Settings) -> None:
    import uvloop

    from trace_platform.lite.stack import run_lite
    from trace_platform.views.live_status import ProgressView

    async def main() -> None:
        def on_ready(platform: RunningPlatform) -> None:
            click.echo(f"trace lite is up on {platform.addr} (data: {settings.data_dir}); Ctrl-C stops it")

        await run_lite(settings, on_ready, progress=ProgressView())

    uvloop.run(main())


def _lite_demo(settings: Settings) -> None:
    """The README's main job: anvil -> chain_sync with Cryo -> Query Service, on embedded defaults."""
    import asyncio
    import contextlib

    import uvloop

    from trace_platform.cli.tasks import run_demo
    from trace_platform.lite import credentials
    from trace_platform.lite.anvil import AnvilNode
    from trace_platform.lite.chain_demo import DEMO_POOL, make_chain, run_chain_demo
    from trace_platform.lite.stack import run_lite

    node = AnvilNode.start()
    try:
        click.echo(f"anvil (pid {node.proc.pid}) is making blocks with transactions and event logs ...")
        to_block = make_chain(node)
        settings = replace(settings, rpc_pools={**settings.rpc_pools, DEMO_POOL: node.url})

        async def main() -> None:
            ready: asyncio.Queue[RunningPlatform] = asyncio.Queue()
            stack = asyncio.create_task(run_lite(settings, ready.put_nowait))
            waiter = asyncio.create_task(ready.get())
            await asyncio.wait({stack, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if stack.done():
                stack.result()
                return
            platform = waiter.result()
            click.echo(f"trace lite is up on {platform.addr} (data: {settings.data_dir})")
            creds = credentials.load(settings.data_dir)
            assert creds is not None and platform.settings.admin_token
            try:
                await run_chain_demo(
                    platform.addr, platform.settings.admin_token, creds.user_token, to_block, click.echo
                )
                await run_demo(platform.addr, platform.settings.admin_token)
            finally:
                stack.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stack

        uvloop.run(main())
    finally:
        node.stop()


@lite.command("env")
@data_dir_option
def lite_env(data_dir: Path) -> None:
    """Print shell exports of the running Lite's address and user token, for tools that
    are not `trace` (grpcurl, scripts): eval "$(trace lite env)"."""
    import shlex

    from trace_platform.cli.common import CliError, lite_addr, user_token

    if not (data_dir / "lite.json").exists():
        raise CliError(f"no credentials in {data_dir}", hint="start `trace lite up` (or give --data-dir)")
    click.echo(f"export TRACE_ADDR={shlex.quote(lite_addr(data_dir))}")
    click.echo(f"export TRACE_USER_TOKEN={shlex.quote(user_token(data_dir))}")
