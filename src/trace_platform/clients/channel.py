"""Channels to Trace servers that accept what the servers send, in plaintext (Lite on
loopback) or TLS (the cluster profile; mutual TLS when a client certificate is given).

Servers and clients allow messages up to ``core.defaults.MAX_MESSAGE_BYTES`` (one constant)
and QueryArrow fills them with record batches; a channel with gRPC's default 4 MiB
receive limit would refuse a large batch (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

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


def insecure_channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=_OPTIONS)


def open_channel(addr: str, tls: ClientTls | None = None) -> grpc.aio.Channel:
    """Plaintext when ``tls`` is None, else TLS with its trust and identity."""
    if tls is None:
        return insecure_channel(addr)
    return grpc.aio.secure_channel(addr, tls.credentials(), options=_OPTIONS)
