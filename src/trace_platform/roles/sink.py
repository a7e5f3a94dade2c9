"""The sink role: the SinkService and the consumer of the 'buffers' queue, woken by the
queue's NOTIFY when the Dispatcher's outbox relay publishes a buffer."""

from __future__ import annotations

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.sink.app import build_sink


async def build_sink_role(ctx: RoleContext, stores: ObjectStores | None = None) -> RoleParts:
    sink = build_sink(ctx.pool, ctx.queue, ctx.settings, stores, ctx.registry)
    ctx.stack.push_async_callback(sink.stop)
    return RoleParts([sink.binding], sink.start)
