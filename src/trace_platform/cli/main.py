"""Entry point of the `trace` command."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from pathlib import Path

import click
import uvloop

from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.app import RunningPlatform, platform_operators, start_platform
from trace_platform.cli.bundle import bundle_group
from trace_platform.cli.chain_sync import CHAIN_SYNC_COMMANDS
from trace_platform.cli.common import addr_option, data_dir_option
from trace_platform.cli.query import query, sql_group
from trace_platform.cli.tasks import demo, run_demo, task_group
from trace_platform.core.config import Settings, settings_from_env
from trace_platform.core.keys import KeyStore
from trace_platform.servers.common.logs import configure_logging
from trace_platform.servers.common.server import wait_for_shutdown_signal


@click.group()
@click.option("--log-level", default="WARNING", envvar="TRACE_LOG_LEVEL", show_default=True)
def cli(log_level: str) -> None:
    """Trace: sync, query and alert on blockchain data."""
    configure_logging(log_level.upper())


@cli.group()
def lite() -> None:
    """The Lite profile: everything on one machine."""


@lite.command("up")
@click.option("--listen", envvar="TRACE_LISTEN", default="127.0.0.1:50051", show_default=True)
@data_dir_option
@click.option(
    "--demo",
    "with_demo",
    is_flag=True,
    help="Start a local anvil chain, sync it with Cryo, query it, run a demo task, then stop.",
)
def lite_up(listen: str, data_dir: Path, with_demo: bool) -> None:
    """Start the whole platform in the foreground (Ctrl-C stops it)."""
    from trace_platform.lite.stack import run_lite

    settings = replace(settings_from_env(), listen=listen, data_dir=data_dir)
    if with_demo:
        _lite_demo(settings)
        return

    async def main() -> None:
        def on_ready(platform: RunningPlatform) -> None:
            click.echo(f"trace lite is up on {platform.addr} (data: {settings.data_dir}); Ctrl-C stops it")

        await run_lite(settings, on_ready, progress=click.echo)

    uvloop.run(main())


def _lite_demo(settings: Settings) -> None:
    """The README's main job: anvil -> chain_sync with Cryo -> Query Service, on embedded defaults."""
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


@cli.group()
def db() -> None:
    """Database administration."""


@db.command("migrate")
@click.option("--database-url", envvar="TRACE_DATABASE_URL", required=True)
def db_migrate(database_url: str) -> None:
    """Apply pending schema migrations."""
    applied = asyncio.run(migrate_dsn(database_url))
    click.echo(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")


@cli.group()
def dispatcher() -> None:
    """The Dispatcher service on its own (cluster profile)."""


@dispatcher.command("serve")
@click.option("--listen", envvar="TRACE_LISTEN", default="127.0.0.1:50051", show_default=True)
@click.option("--worker/--no-worker", default=False, help="Also run a worker in this process.")
def dispatcher_serve(listen: str, worker: bool) -> None:
    """Serve the Dispatcher (needs TRACE_DATABASE_URL, TRACE_WORKER_TOKEN, TRACE_ADMIN_TOKEN)."""
    settings = replace(settings_from_env(), listen=listen)
    if not settings.database_url:
        raise click.ClickException("TRACE_DATABASE_URL is required")

    async def main() -> None:
        platform = await start_platform(settings, run_worker=worker)
        click.echo(f"dispatcher serving on {platform.addr}", err=True)
        try:
            await wait_for_shutdown_signal()
        finally:
            await platform.stop()

    uvloop.run(main())


@cli.group()
def worker() -> None:
    """The trusted worker wrapper on its own."""


@worker.command("run")
@addr_option
def worker_run(addr: str) -> None:
    """Take wake-ups from the queue and run tasks (needs TRACE_DATABASE_URL, TRACE_WORKER_TOKEN)."""
    import grpc

    from trace_platform.adapters.postgres.pool import create_pool
    from trace_platform.adapters.queue.postgres import PostgresQueue
    from trace_platform.clients.batching import BatchingDispatcherClient
    from trace_platform.workers.operators import BUILTIN_OPERATORS
    from trace_platform.workers.runtime import WorkerRuntime

    settings = settings_from_env()
    if not settings.database_url or not settings.worker_token:
        raise click.ClickException("TRACE_DATABASE_URL and TRACE_WORKER_TOKEN are required")

    async def main() -> None:
        pool = await create_pool(settings.database_url or "", 1, 4)
        queue = PostgresQueue(pool)
        async with grpc.aio.insecure_channel(addr) as channel:
            client = BatchingDispatcherClient(channel, worker_token=settings.worker_token)
            operators = {**BUILTIN_OPERATORS, **platform_operators(settings, addr)}
            runtime = WorkerRuntime(queue, client, operators, settings.worker)
            run = asyncio.create_task(runtime.run())
            await wait_for_shutdown_signal()
            run.cancel()
            await runtime.stop()
        await queue.close()
        await pool.close()

    uvloop.run(main())


@cli.group()
def keys() -> None:
    """Capability-token signing keys."""


@keys.command("rotate")
@click.option("--key-dir", type=click.Path(path_type=Path), required=True)
@click.option("--overlap", type=float, default=3600.0, show_default=True, help="Seconds the old key stays valid.")
def keys_rotate(key_dir: Path, overlap: float) -> None:
    """Promote the next key to current; the old current stays in the JWKS for the overlap."""
    store = KeyStore(key_dir)
    ring = store.load_or_create()
    ring.rotate(overlap)
    store.save(ring)
    click.echo(f"current key is now {ring.current.kid}; restart the Dispatcher to sign with it")


cli.add_command(task_group)
cli.add_command(demo)
cli.add_command(sql_group)
cli.add_command(query)
for command in CHAIN_SYNC_COMMANDS:
    cli.add_command(command)
cli.add_command(bundle_group)


def main() -> None:
    cli()
