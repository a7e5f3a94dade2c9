"""Channels to Trace servers that accept what the servers send.

The servers allow messages up to ``MAX_MESSAGE_BYTES`` (servers.common.server; a unit test
keeps the two equal) and QueryArrow fills them with record batches; a channel with
gRPC's default 4 MiB receive limit would refuse a large batch (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def insecure_channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(
        addr,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
