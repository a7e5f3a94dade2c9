"""The worker role: the trusted wrapper that takes task wake-ups from the queue (its
NOTIFY wakes it), claims, heartbeats and completes tasks with the Dispatcher, and runs
the operators. It serves no gRPC service: health and reflection only.

Endpoints: the Dispatcher and the Query Service are this process when it runs them,
else TRACE_DISPATCHER_ADDR and TRACE_QUERY_ADDR. UDFs run on the invoker given (Lite:
the in-process one), else on TRACE_INVOKER_ADDR, else on a backend built here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trace_platform.adapters.invoker.base import RuntimeInvoker
from trace_platform.adapters.invoker.remote import RemoteInvoker
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.roles.context import RoleContext, RoleParts
from trace_platform.roles.operators import platform_operators
from trace_platform.servers.common.background import BackgroundTasks
from trace_platform.workers.operators import BUILTIN_OPERATORS
from trace_platform.workers.runtime import Operator, WorkerRuntime


def _invoker(ctx: RoleContext, given: RuntimeInvoker | None) -> Callable[[], RuntimeInvoker] | None:
    if given is not None:
        return lambda: given
    s = ctx.settings
    if s.endpoints.invoker:
        channel = ctx.channel(s.endpoints.invoker)
        remote = RemoteInvoker(channel, s.worker_token, s.invoker.limits.timeout_seconds)
        return lambda: remote
    return None  # the operator builds the configured backend per task


async def build_worker_role(
    ctx: RoleContext,
    operators: Mapping[str, Operator] = BUILTIN_OPERATORS,
    invoker: RuntimeInvoker | None = None,
) -> RoleParts:
    s = ctx.settings
    channel = ctx.channel(ctx.address_of("dispatcher"))
    client = BatchingDispatcherClient(channel, worker_token=s.worker_token)
    query_addr = ctx.address_of("query")
    all_operators = {**platform_operators(s, query_addr, _invoker(ctx, invoker), ctx.registry), **operators}
    runtime = WorkerRuntime(ctx.queue, client, all_operators, s.worker)
    running = BackgroundTasks()
    # Pushed last, so closed first: the runtime stops before its channel closes.
    ctx.stack.push_async_callback(runtime.stop)
    ctx.stack.push_async_callback(running.stop)
    return RoleParts((), lambda: running.start({"worker": runtime.run()}))
