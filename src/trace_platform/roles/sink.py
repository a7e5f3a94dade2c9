"""The sink role: the SinkService and the consumer of the 'buffers' queue, woken by the
queue's NOTIFY when the Dispatcher's outbox relay publishes a buffer."""

from __future__ import annotations

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.sink.app import DELIVERY_WAKEUP, build_sink


async def build_sink_role(ctx: RoleContext, stores: ObjectStores | None = None) -> RoleParts:
    wake_delivery = ctx.wakeups.signal(DELIVERY_WAKEUP)  # NOTIFY: the delivery role may run elsewhere
    sink = build_sink(ctx.pool, ctx.queue, ctx.settings, stores, ctx.registry, on_new_events=wake_delivery)
    ctx.stack.push_async_callback(sink.stop)
    return RoleParts([sink.binding], sink.start)
