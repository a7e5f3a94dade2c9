"""`trace db`, `trace dispatcher`, `trace worker`, `trace keys`: the cluster profile's pieces.

Each command imports the platform inside its function, so listing them costs nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from trace_platform.cli.common import CliUsageError, addr_option, load_settings
from trace_platform.cli.lite import listen_option


@click.group()
def db() -> None:
    """Database administration."""


@db.command("migrate")
@click.option("--database-url", envvar="TRACE_DATABASE_URL", required=True)
def db_migrate(database_url: str) -> None:
    """Apply pending schema migrations."""
    import asyncio

    from trace_platform.adapters.postgres.migrations import migrate_dsn

    applied = asyncio.run(migrate_dsn(database_url))
    click.echo(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")


@click.group()
def dispatcher() -> None:
    """The Dispatcher service on its own (cluster profile)."""


@dispatcher.command("serve")
@listen_option
@click.option("--worker/--no-worker", default=False, help="Also run a worker in this process.")
def dispatcher_serve(listen: str, worker: bool) -> None:
    """Serve every role but the worker in one process, migrating first (needs
    TRACE_DATABASE_URL, TRACE_WORKER_TOKEN, TRACE_ADMIN_TOKEN). One role alone:
    `trace serve dispatcher`."""
    from trace_platform.cli.serve import ROLE_NAMES, run_roles

    roles = ROLE_NAMES if worker else tuple(r for r in ROLE_NAMES if r != "worker")
    run_roles(roles, listen, migrate=True, label="dispatcher")


@click.group()
def worker() -> None:
    """The trusted worker wrapper on its own."""


@worker.command("run")
@addr_option
def worker_run(addr: str) -> None:
    """Take wake-ups from the queue and run tasks against the Dispatcher and Query Service
    at ADDR (needs TRACE_DATABASE_URL, TRACE_WORKER_TOKEN): `trace serve worker` with
    TRACE_DISPATCHER_ADDR and TRACE_QUERY_ADDR set to ADDR unless they are set, its health
    listener on a free loopback port."""
    from trace_platform.cli.serve import run_roles

    settings = load_settings()
    if not settings.database_url or not settings.worker_token:
        raise CliUsageError("TRACE_DATABASE_URL and TRACE_WORKER_TOKEN: required")
    endpoints = replace(
        settings.endpoints,
        dispatcher=settings.endpoints.dispatcher or addr,
        query=settings.endpoints.query or addr,
    )
    worker_settings = replace(settings, endpoints=endpoints)
    run_roles(("worker",), "127.0.0.1:0", migrate=False, label="worker", settings=worker_settings)


@click.group()
def keys() -> None:
    """Capability-token signing keys."""


@keys.command("rotate")
@click.option("--key-dir", type=click.Path(path_type=Path), required=True)
@click.option("--overlap", type=float, default=3600.0, show_default=True, help="Seconds the old key stays valid.")
def keys_rotate(key_dir: Path, overlap: float) -> None:
    """Promote the next key to current; the old current stays in the JWKS for the overlap."""
    from trace_platform.core.keys import KeyStore

    store = KeyStore(key_dir)
    ring = store.load_or_create()
    ring.rotate(overlap)
    store.save(ring)
    click.echo(f"current key is now {ring.current.kid}; restart the Dispatcher to sign with it")
