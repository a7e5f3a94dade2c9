"""The only way out of an isolated UDF: a unix socket in its private run directory,
forwarded byte for byte to the platform's task endpoint (host:port).

A pathname unix socket lives in the file system, not in a network namespace, so a UDF
with no network interface can still connect to it; the invoker decides where the bytes
go. The UDF sees ``TRACE_TASK_ENDPOINT=unix:/path/task.sock``, a target gRPC clients
(Python grpcio, @grpc/grpc-js) accept as is. What the task endpoint accepts is still up
to its own auth: the UDF holds only its capability token.

Capability tokens are short-lived and renewed by the worker's heartbeats. The bridge stays
byte for byte (putting the worker's newest token on the UDF's calls would mean terminating
its HTTP/2 and gRPC here, a second parser of untrusted bytes in a trusted process), so the
UDF is handed the attempt's *current* token when it starts (``OperatorContext.
capability_token``). That token has about half the TTL or more left (~150 s by default)
against a UDF timeout of 60 s; TokenSettings.ttl_seconds must stay above twice the UDF
timeout. The token stops working as soon as the attempt ends, whatever its expiry.

When the task endpoint serves TLS (the cluster profile), the bridge dials it with TLS
(ALPN h2, the invoker's trust and client certificate): the UDF's plaintext HTTP/2 is
carried inside it unchanged, and the UDF never holds a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from pathlib import Path

MAX_CONNECTIONS = 16
CHUNK = 65536


def split_host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"task endpoint must be host:port, got {endpoint!r}")
    return host.strip("[]"), int(port)


def task_endpoint_tls(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """TLS to the task endpoint as gRPC speaks it: HTTP/2 by ALPN, the server checked."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file))
    context.set_alpn_protocols(["h2"])
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TaskEndpointBridge:
    def __init__(
        self, socket_path: Path, endpoint: str, owner_uid: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.socket_path = socket_path
        self._host, self._port = split_host_port(endpoint)
        self._owner_uid = owner_uid
        self._tls = tls
        self._server: asyncio.base_events.Server | None = None
        self._active: set[asyncio.Task[None]] = set()

    @property
    def target(self) -> str:
        return f"unix:{self.socket_path}"

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        if self._owner_uid is not None:
            os.chown(self.socket_path, self._owner_uid, self._owner_uid)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._active) >= MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self._active.add(task)
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, self._port, ssl=self._tls), 5.0
            )
        except (OSError, TimeoutError):
            writer.close()
            self._active.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._active.discard(task)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._active):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
