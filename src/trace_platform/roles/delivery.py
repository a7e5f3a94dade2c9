"""The delivery role: the Delivery Service's loop (webhooks out). It serves no gRPC
service of its own: health and reflection only. It is the one role that reaches the
internet, which is why it runs apart from the sink."""

from __future__ import annotations

from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.sink.app import DELIVERY_WAKEUP, build_delivery


async def build_delivery_role(ctx: RoleContext) -> RoleParts:
    # Woken by the sink when it makes new events (wherever it runs), else it polls.
    delivery = build_delivery(ctx.pool, ctx.settings, ctx.registry, wait=ctx.wakeups.waiter(DELIVERY_WAKEUP))
    ctx.stack.push_async_callback(delivery.stop)
    return RoleParts((), delivery.start)
