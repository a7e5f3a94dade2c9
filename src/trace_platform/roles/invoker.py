"""The invoker role: the RuntimeInvoker Service (UDFs in the sandbox or on Lambda).

UDFs reach the task APIs at TRACE_INVOKER_TASK_ENDPOINT; unless it is set, at this
process when it also runs the dispatcher and query roles (Lite)."""

from __future__ import annotations

from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.roles.operators import with_task_endpoint
from trace_platform.servers.invoker.app import RuntimeInvokerApp, build_invoker_app


def start_invoker_app(ctx: RoleContext) -> RuntimeInvokerApp:
    settings = ctx.settings
    if {"dispatcher", "query"} <= ctx.roles:
        settings = with_task_endpoint(settings, ctx.addr)
    app = build_invoker_app(settings, registry=ctx.registry)
    ctx.stack.push_async_callback(app.close)
    return app


async def build_invoker_role(ctx: RoleContext) -> RoleParts:
    return RoleParts([start_invoker_app(ctx).binding])
