"""The api role: the public user API (``trace.api.v1``: datasets, DAGs, bundles, alerts).

User queries are served by the query role (they need its worker processes); both
authenticate users the same way (``servers.api.identity``)."""

from __future__ import annotations

from trace_platform.adapters.objectstore.factory import object_stores
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.api.app import ApiDeps, build_api_bindings
from trace_platform.servers.api.identity import build_user_authenticator


async def build_api_role(ctx: RoleContext, stores: ObjectStores | None = None) -> RoleParts:
    deps = ApiDeps(
        ctx.pool,
        ctx.settings,
        build_user_authenticator(ctx.pool, ctx.settings.user_auth),
        stores or object_stores(ctx.settings),
        ctx.registry,
    )
    return RoleParts(build_api_bindings(deps))
