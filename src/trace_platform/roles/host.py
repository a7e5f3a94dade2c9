"""Runs a set of roles in one process on one port: opens the pool, the queue, the named
wake-ups, the metrics endpoint and the listening port, builds each role from them, then
serves their services (plus health and reflection) and starts their background work.

Everything opened goes on one AsyncExitStack, in order, so a start-up that fails part way
(a bad address, a database that refuses) closes exactly what it opened, in reverse, and a
stop closes it all the same way after the server has drained.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import asyncpg

from trace_platform.adapters.postgres.migrations import migrate_dsn
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.postgres.wakeups import PostgresWakeups
from trace_platform.adapters.queue.base import Queue
from trace_platform.adapters.queue.factory import open_queue
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.roles.api import build_api_role
from trace_platform.roles.context import RoleBuilder, RoleContext, RoleParts
from trace_platform.roles.delivery import build_delivery_role
from trace_platform.roles.dispatcher import build_dispatcher_role
from trace_platform.roles.invoker import build_invoker_role
from trace_platform.roles.query import build_query_role
from trace_platform.roles.sink import build_sink_role
from trace_platform.roles.worker import build_worker_role
from trace_platform.servers.common.metrics import MetricsEndpoint, process_registry
from trace_platform.servers.common.server import GrpcServer, bind_server
from trace_platform.servers.dispatcher.app import load_key_ring

# Every role, in the order a process builds them (and so closes them in reverse: workers first).
ROLES: dict[str, RoleBuilder] = {
    "dispatcher": build_dispatcher_role,
    "query": build_query_role,
    "invoker": build_invoker_role,
    "sink": build_sink_role,
    "delivery": build_delivery_role,
    "api": build_api_role,
    "worker": build_worker_role,
}


@dataclass
class RunningRoles:
    settings: Settings
    pool: asyncpg.Pool
    queue: Queue
    server: GrpcServer
    roles: frozenset[str]
    _stack: contextlib.AsyncExitStack

    @property
    def addr(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.server.port}"

    async def stop(self, grace: float = 2.0) -> None:
        # Drain in-flight calls first, then close what the roles opened, then the pool.
        await self.server.stop(grace)
        await self._stack.aclose()


def check_roles(roles: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(roles)
    unknown = sorted(chosen - ROLES.keys())
    if unknown or not chosen:
        raise InvalidArgument(
            "UNKNOWN_ROLE", f"unknown role {', '.join(unknown) or '(none)'}; roles: {', '.join(ROLES)}"
        )
    return chosen


async def host_roles(
    settings: Settings,
    roles: Iterable[str],
    build: Callable[[RoleContext], Awaitable[list[RoleParts]]] | None = None,
    *,
    migrate: bool = False,
) -> RunningRoles:
    """Start ``roles`` in this process. ``build`` composes them (default: each role's own
    root, in ``ROLES`` order); Lite gives its own to share one invoker and test stores."""
    chosen = check_roles(roles)
    if not settings.database_url:
        raise FailedPrecondition("DATABASE_URL_REQUIRED", "TRACE_DATABASE_URL: required")
    stack = contextlib.AsyncExitStack()
    try:
        if migrate:
            await migrate_dsn(settings.database_url)
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        stack.push_async_callback(pool.close)
        queue = await open_queue(settings, pool)  # TRACE_QUEUE_BACKEND: postgres or sqs
        stack.push_async_callback(queue.close)
        wakeups = PostgresWakeups(pool)
        stack.push_async_callback(wakeups.close)
        # One registry for every role of this process, served on one endpoint.
        registry = process_registry()
        if settings.metrics_listen:
            stack.callback(MetricsEndpoint(registry, settings.metrics_listen).close)
        check_plaintext(settings)
        check_user_auth(settings, chosen)
        bound = bind_server(settings.listen, settings.tls, settings.health_listen)
        stack.push_async_callback(bound.close)
        addr = f"{settings.listen.rsplit(':', 1)[0]}:{bound.port}"
        ring = load_key_ring(settings) if "dispatcher" in chosen else None
        ctx = RoleContext(settings, pool, queue, wakeups, registry, addr, chosen, stack, ring)
        parts = await (build or _each_role)(ctx)
        server = await bound.serve([b for p in parts for b in p.bindings])
        for p in parts:
            p.start()
    except BaseException:
        await stack.aclose()
        raise
    return RunningRoles(settings, pool, queue, server, chosen, stack)


def _on_loopback(settings: Settings) -> bool:
    return settings.listen.rsplit(":", 1)[0].strip("[]") in ("127.0.0.1", "::1", "localhost")


def check_plaintext(settings: Settings) -> None:
    """Deny by default: plaintext gRPC only on loopback (Lite, tests) unless allowed."""
    tls = settings.tls
    if tls.serves_tls or tls.allow_plaintext or _on_loopback(settings):
        return
    raise FailedPrecondition(
        "TLS_REQUIRED",
        f"listening on {settings.listen} needs TRACE_TLS_CERT_FILE and TRACE_TLS_KEY_FILE"
        " (or TRACE_TLS_ALLOW_PLAINTEXT=1 behind a mesh that encrypts)",
    )


def check_user_auth(settings: Settings, roles: frozenset[str]) -> None:
    """HS256 user tokens (one shared secret signs and verifies) are Lite's, on loopback:
    a role that serves users anywhere else verifies the identity provider's ES256/RS256."""
    if settings.user_auth.hs256_secret and roles & {"api", "query"} and not _on_loopback(settings):
        raise FailedPrecondition(
            "USER_HS256_NOT_ALLOWED",
            "TRACE_USER_AUTH_HS256_SECRET: HS256 user tokens are for Lite on loopback;"
            " set TRACE_USER_AUTH_JWKS_PATH (the identity provider's ES256/RS256 keys) instead",
        )


async def _each_role(ctx: RoleContext) -> list[RoleParts]:
    return [await build(ctx) for name, build in ROLES.items() if name in ctx.roles]
