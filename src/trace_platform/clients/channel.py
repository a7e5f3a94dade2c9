"""Channels to Trace servers that accept what the servers send, in plaintext (Lite on
loopback) or TLS (the cluster profile; mutual TLS when a client certificate is given).

Servers and clients allow messages up to ``core.defaults.MAX_MESSAGE_BYTES`` (one constant)
and QueryArrow fills them with record batches; a channel with gRPC's default 4 MiB
receive limit would refuse a large batch (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from trace_platform.core.defaults import MAX_MESSAGE_BYTES

_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class ClientTls:
    """Dial with TLS: trust ``ca_file`` (None: the system's roots), and present
    ``cert_file``/``key_file`` when the server requires a client certificate."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(read(self.ca_file), read(self.key_file), read(self.cert_file))


def client_tls_from_env(env: Mapping[str, str] | None = None) -> ClientTls | None:
    """TLS for a user's client (CLI, SDK) from the variables the platform's own dialers
    use: TRACE_TLS_CA_FILE (trust), TRACE_TLS_CLIENT_CERT_FILE and _KEY_FILE (mutual
    TLS); None (plaintext) when none is set."""
    env = os.environ if env is None else env

    def path(name: str) -> Path | None:
        return Path(env[name]) if env.get(name) else None

    ca, cert, key = path("TRACE_TLS_CA_FILE"), path("TRACE_TLS_CLIENT_CERT_FILE"), path("TRACE_TLS_CLIENT_KEY_FILE")
    return ClientTls(ca, cert, key) if ca or cert else None


def user_channel(addr: str) -> grpc.aio.Channel:
    """A channel for a user's client: TLS as the environment says (client_tls_from_env)."""
    return open_channel(addr, client_tls_from_env())


def insecure_channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=_OPTIONS)


def open_channel(addr: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """Plaintext when ``tls`` is None, else TLS with its trust and identity."""
    if tls is None:
        return insecure_channel(addr)
    return grpc.aio.secure_channel(addr, tls.credentials(), options=_OPTIONS)
