"""Typed client for the SinkService (dead letters; admin token)."""

from __future__ import annotations

import grpc

from trace_platform.clients.errors import call
from trace_platform.core.metadata import ADMIN_TOKEN
from trace_platform.gen.trace.v1 import sink_pb2, sink_pb2_grpc

pb = sink_pb2


class SinkClient:
    def __init__(self, channel: grpc.aio.Channel, *, admin_token: str) -> None:
        self._stub = sink_pb2_grpc.SinkServiceStub(channel)
        self._md = ((ADMIN_TOKEN, admin_token),)

    async def list_dead_letters(self, page_size: int = 0, page_token: str = "") -> pb.ListDeadLettersResponse:
        req = pb.ListDeadLettersRequest(page_size=page_size, page_token=page_token)
        return await call(self._stub.ListDeadLetters(req, metadata=self._md))

    async def replay(self, dead_letter_id: str) -> pb.ReplayDeadLetterResponse:
        req = pb.ReplayDeadLetterRequest(dead_letter_id=dead_letter_id)
        return await call(self._stub.ReplayDeadLetter(req, metadata=self._md))
