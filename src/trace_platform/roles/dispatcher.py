"""The dispatcher role: DispatcherService and ChainSyncService, the outbox relay, lease
reaper and retry scheduler, and chain_sync's planner and head observer.

The planner is woken by name through NOTIFY (a completion that published datasets, an
Apply), so any replica's planner wakes; the outbox wake-up stays in process because
every replica's relay drains the same outbox table.
"""

from __future__ import annotations

from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.servers.chain_sync.app import PLANNER_WAKEUP, build_chain_sync
from trace_platform.servers.common.background import BackgroundTasks
from trace_platform.servers.dispatcher.app import build_dispatcher


async def build_dispatcher_role(ctx: RoleContext) -> RoleParts:
    s = ctx.settings
    dispatcher = build_dispatcher(
        ctx.pool, ctx.queue, s, ctx.key_ring, ctx.registry, wake_planner=ctx.wakeups.signal(PLANNER_WAKEUP)
    )
    chain_sync, chain_sync_loops = build_chain_sync(
        ctx.pool, s, dispatcher.wake_outbox, ctx.registry, wakeups=ctx.wakeups
    )
    loops = [*dispatcher.loops, *chain_sync_loops]
    running = BackgroundTasks()
    ctx.stack.push_async_callback(running.stop)
    return RoleParts([dispatcher.binding, chain_sync], lambda: running.start({lp.name: lp.run() for lp in loops}))
