"""Builds a grpc.aio server with health, reflection and error mapping, and runs it
until SIGTERM/SIGINT with a two-stage graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from trace_platform.core.config import TlsSettings
from trace_platform.core.defaults import MAX_MESSAGE_BYTES
from trace_platform.servers.common.errors import ErrorMappingInterceptor

log = logging.getLogger(__name__)

Register = Callable[[grpc.aio.Server], None]


@dataclass
class ServiceBinding:
    """One servicer: how to add it to a server and its full service name."""

    name: str
    register: Register


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    services: list[str] = field(default_factory=list)
    # The plaintext health-only listener beside a TLS one (Kubernetes' gRPC probes speak
    # no TLS); None when not configured.
    health_server: grpc.aio.Server | None = None
    health_port: int = 0

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def stop(self, grace: float = 5.0) -> None:
        # Stage 1: tell load balancers to go away; stage 2: finish in-flight calls.
        await self.set_serving(False)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(None)


@dataclass
class BoundServer:
    """A server listening on its port but not yet serving: a composition root binds first,
    so its components can be built knowing the address, then ``serve`` registers them.
    ``close`` releases the port of a server that never started."""

    server: grpc.aio.Server
    listen: str
    port: int
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    _started: bool = False

    async def serve(self, bindings: Iterable[ServiceBinding]) -> GrpcServer:
        names = []
        for binding in bindings:
            binding.register(self.server)
            names.append(binding.name)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self.server,
        )
        self._started = True
        await self.server.start()
        if self.health_server is not None:
            # The same servicer: both listeners always say the same thing.
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.health_server)
            await self.health_server.start()
        running = GrpcServer(self.server, health_servicer, self.port, names, self.health_server, self.health_port)
        await running.set_serving(True)
        log.info("grpc server started", extra={"listen": self.listen, "port": self.port, "services": names})
        return running

    async def close(self) -> None:
        # grpc.aio releases the port of a server only once it has started: one that never
        # served is started (no services: every call UNIMPLEMENTED) and stopped at once.
        if not self._started:
            self._started = True
            await self.server.start()
            if self.health_server is not None:
                await self.health_server.start()
        await self.server.stop(None)
        if self.health_server is not None:
            await self.health_server.stop(None)


def bind_server(listen: str, tls: TlsSettings | None = None, health_listen: str = "") -> BoundServer:
    """Listen on ``listen``: TLS only when ``tls`` carries a certificate (and mutual TLS
    when it names a client CA), else plaintext. ``health_listen`` adds a plaintext
    listener that serves grpc.health.v1 only (for probes that cannot speak TLS)."""
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    if tls is not None and tls.serves_tls:
        port = server.add_secure_port(listen, server_credentials(tls))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    if not health_listen:
        return BoundServer(server, listen, port)
    health_only = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_port = health_only.add_insecure_port(health_listen)
    if health_port == 0:
        raise OSError(f"cannot listen on {health_listen}")
    return BoundServer(server, listen, port, health_only, health_port)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    assert tls.cert_file is not None and tls.key_file is not None
    client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


async def start_server(bindings: Iterable[ServiceBinding], listen: str) -> GrpcServer:
    bound = bind_server(listen)
    try:
        return await bound.serve(bindings)
    except BaseException:
        await bound.close()
        raise


async def wait_for_shutdown_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown signal received")
