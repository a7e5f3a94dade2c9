"""The query role: the Query Service and its worker processes.

Task tokens are verified with the Dispatcher's keys: from the key ring itself when the
dispatcher role runs in this process, else fetched with GetTaskJwks from the configured
Dispatcher (TRACE_DISPATCHER_ADDR) and cached by the verifier (jwks_cache_seconds,
refetched on an unknown kid no more often than jwks_refresh_min_seconds).
"""

from __future__ import annotations

from typing import Any

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.tokens import JwksFetcher
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.query.app import QueryServer, build_query_server


def jwks_source(ctx: RoleContext) -> JwksFetcher:
    if "dispatcher" in ctx.roles:
        ring = ctx.key_ring

        async def local_jwks() -> dict[str, Any]:
            return ring.jwks() if ring is not None else {"keys": []}

        return local_jwks
    channel = ctx.channel(ctx.address_of("dispatcher"))
    return DispatcherClient(channel).jwks


async def start_query_server(ctx: RoleContext, stores: ObjectStores | None = None) -> QueryServer:
    query = build_query_server(ctx.pool, ctx.settings, jwks_source(ctx), stores, ctx.registry)
    ctx.stack.push_async_callback(query.stop)
    await query.start()
    return query


async def build_query_role(ctx: RoleContext) -> RoleParts:
    query = await start_query_server(ctx)
    return RoleParts(query.bindings)
