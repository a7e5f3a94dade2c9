"""The Lite composition: every role in one process on one port (``trace lite up``, the
integration tests), built by the roles' own roots through the same host as the cluster
profile. What Lite adds is sharing that is only possible in one process: the worker
runs UDFs on the in-process invoker, and the Query Service verifies task tokens with the
Dispatcher's key ring directly; tests may also give the stores and operators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.queue.base import Queue
from trace_platform.core.config import Settings
from trace_platform.roles.api import build_api_role
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.roles.delivery import build_delivery_role
from trace_platform.roles.dispatcher import build_dispatcher_role
from trace_platform.roles.host import ROLES, RunningRoles, host_roles
from trace_platform.roles.invoker import start_invoker_app
from trace_platform.roles.query import start_query_server
from trace_platform.roles.sink import build_sink_role
from trace_platform.roles.worker import build_worker_role
from trace_platform.servers.common.server import GrpcServer
from trace_platform.servers.invoker.app import RuntimeInvokerApp
from trace_platform.servers.query.app import QueryServer
from trace_platform.workers.operators import BUILTIN_OPERATORS
from trace_platform.workers.runtime import Operator


@dataclass
class RunningPlatform:
    roles: RunningRoles
    query: QueryServer
    invoker: RuntimeInvokerApp

    @property
    def settings(self) -> Settings:
        return self.roles.settings

    @property
    def pool(self) -> asyncpg.Pool:
        return self.roles.pool

    @property
    def queue(self) -> Queue:
        return self.roles.queue

    @property
    def server(self) -> GrpcServer:
        return self.roles.server

    @property
    def addr(self) -> str:
        return self.roles.addr

    async def stop(self, grace: float = 2.0) -> None:
        await self.roles.stop(grace)


async def start_platform(
    settings: Settings,
    *,
    run_loops: bool = True,
    run_worker: bool = False,
    operators: Mapping[str, Operator] = BUILTIN_OPERATORS,
    migrate: bool = True,
    stores: ObjectStores | None = None,
    sink_stores: ObjectStores | None = None,
) -> RunningPlatform:
    """Every role but the worker (``run_worker`` adds it); ``run_loops=False`` serves the
    services without their background loops (tests that drive the loops themselves)."""
    shared = _Shared()

    async def build(ctx: RoleContext) -> list[RoleParts]:
        with_loops = [await build_dispatcher_role(ctx)]
        shared.query = await start_query_server(ctx, stores)
        shared.invoker = start_invoker_app(ctx)
        with_loops += [await build_sink_role(ctx, sink_stores), await build_delivery_role(ctx)]
        with_loops.append(await build_api_role(ctx, stores))
        parts = with_loops if run_loops else [RoleParts(p.bindings) for p in with_loops]
        parts += [RoleParts(shared.query.bindings), RoleParts([shared.invoker.binding])]
        if run_worker:
            parts.append(await build_worker_role(ctx, operators, shared.invoker.metered))
        return parts

    roles = set(ROLES) if run_worker else set(ROLES) - {"worker"}
    running = await host_roles(settings, roles, build, migrate=migrate)
    assert shared.query is not None and shared.invoker is not None
    return RunningPlatform(running, shared.query, shared.invoker)


@dataclass
class _Shared:
    """What Lite keeps of the roles it built: tests reach the query workers and invoker."""

    query: QueryServer | None = None
    invoker: RuntimeInvokerApp | None = None
