"""What a role's composition root is given, and what it gives back."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import grpc
from prometheus_client import CollectorRegistry

from trace_platform.adapters.queue.base import Queue
from trace_platform.clients.channel import ClientTls, open_channel
from trace_platform.core.config import Settings, TlsSettings
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.keys import KeyRing
from trace_platform.servers.common.loop import Wakeups
from trace_platform.servers.common.server import ServiceBinding

# Each role whose address another role may need, and the variable that configures it.
ENDPOINT_VARIABLES = {
    "dispatcher": "TRACE_DISPATCHER_ADDR",
    "query": "TRACE_QUERY_ADDR",
    "invoker": "TRACE_INVOKER_ADDR",
}


def client_tls(tls: TlsSettings) -> ClientTls | None:
    if not tls.dials_tls:
        return None
    return ClientTls(tls.ca_file, tls.client_cert_file, tls.client_key_file)


@dataclass(frozen=True)
class RoleContext:
    """Shared by every role of one process. ``stack`` closes what a role opens, in reverse,
    whether the process stops or its start-up fails part way."""

    settings: Settings
    pool: asyncpg.Pool
    queue: Queue
    wakeups: Wakeups
    registry: CollectorRegistry
    addr: str  # this process's gRPC address (bound before any role is built)
    roles: frozenset[str]  # the roles this process runs
    stack: contextlib.AsyncExitStack
    # The Dispatcher's signing keys, loaded once when the dispatcher role is here (None:
    # dev HS256 secret, or the Dispatcher runs elsewhere).
    key_ring: KeyRing | None = None

    def channel(self, addr: str) -> grpc.aio.Channel:
        """A channel to another platform service, closed with this context: TLS (and the
        client certificate, for mutual TLS) when the settings say so."""
        channel = open_channel(addr, client_tls(self.settings.tls))
        self.stack.push_async_callback(channel.close)
        return channel

    def address_of(self, role: str) -> str:
        """This process when it runs ``role``, else the configured endpoint (required)."""
        if role in self.roles:
            return self.addr
        configured = getattr(self.settings.endpoints, role)
        if not isinstance(configured, str) or not configured:
            var = ENDPOINT_VARIABLES[role]
            raise FailedPrecondition(
                "ENDPOINT_NOT_CONFIGURED", f"{var}: required when the {role} role runs in another process"
            )
        return configured


@dataclass
class RoleParts:
    """A built role: the gRPC services it serves and its background work, started once
    the server serves (its stop is already on the context's stack)."""

    bindings: Sequence[ServiceBinding] = ()
    start: Callable[[], None] = field(default=lambda: None)


RoleBuilder = Callable[[RoleContext], Awaitable[RoleParts]]
