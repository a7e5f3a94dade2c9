"""Frames between the Query Service and its query processes, over the process's pipes.

A frame is a 4-byte big-endian length, a 1-byte kind and the payload. The service trusts
what it sends (a pickled request) but not what comes back, since the process runs
untrusted SQL: replies are JSON, serialized protobuf rows or raw Arrow IPC bytes that the
service forwards without decoding, and a frame larger than ``MAX_FRAME`` ends the process.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from enum import IntEnum
from typing import Any, BinaryIO

from trace_platform.core.defaults import MAX_MESSAGE_BYTES
from trace_platform.core.errors import ERROR_CLASSES, ErrorKind, Internal, TraceError

HEADER = struct.Struct(">IB")
# One reply never exceeds a gRPC message (the process enforces the cap) plus framing.
MAX_FRAME = MAX_MESSAGE_BYTES + (1 << 20)


class Kind(IntEnum):
    CONFIG = 1  # service -> process, JSON, once
    READY = 2  # process -> service, JSON
    REQUEST = 3  # service -> process, pickle
    COLUMNS = 4  # JSON [[name, type], ...]
    ROWS = 5  # a serialized TaskQueryResponse holding rows only (concatenations merge)
    ARROW = 6  # 8-byte row count, then Arrow IPC stream bytes
    DONE = 7  # JSON {"truncated": bool}
    FAILED = 8  # JSON {"kind", "reason", "message"} (a TraceError) or {"kind": "internal"}
    OPEN = 9  # process -> service, JSON {"path"}: a granted object's real size, please
    READ = 10  # process -> service, JSON {"path", "offset", "size"}
    DATA = 11  # service -> process: the size (8 bytes) or the bytes read
    IO_FAILED = 12  # service -> process, JSON {"failure": missing | corrupt | unavailable}


class FrameError(Exception):
    """The other side broke the protocol (or ended)."""


def encode(kind: Kind, payload: bytes) -> bytes:
    return HEADER.pack(len(payload) + 1, kind) + payload


def encode_json(kind: Kind, value: Any) -> bytes:
    return encode(kind, json.dumps(value).encode())


async def read_frame(reader: asyncio.StreamReader) -> tuple[Kind, bytes]:
    try:
        length, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
        if not 1 <= length <= MAX_FRAME or kind not in Kind._value2member_map_:
            raise FrameError("malformed frame")
        return Kind(kind), await reader.readexactly(length - 1)
    except asyncio.IncompleteReadError:
        raise FrameError("the query process ended") from None


def read_frame_sync(stream: BinaryIO) -> tuple[Kind, bytes] | None:
    """The next frame, or None at end of input (the service closed the pipe)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    length, kind = HEADER.unpack(header)
    payload = stream.read(length - 1)
    if len(payload) < length - 1:
        return None
    return Kind(kind), payload


def failure_frame(exc: BaseException, detail: str = "") -> bytes:
    """FAILED for ``exc``: a TraceError as its kind, reason and message; anything else as
    INTERNAL with at most ``detail`` (never the exception's text, which may quote data)."""
    if isinstance(exc, TraceError):
        return encode_json(Kind.FAILED, {"kind": exc.kind.value, "reason": exc.reason, "message": exc.message})
    return encode_json(Kind.FAILED, {"kind": ErrorKind.INTERNAL.value, "message": detail})


_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def failure(payload: bytes) -> TraceError:
    """The error a FAILED frame carries, checked (it comes from the query process):
    an unknown kind or a malformed reason becomes INTERNAL."""
    try:
        reply = json.loads(payload)
        kind = ErrorKind(reply["kind"])
        reason, message = str(reply.get("reason", "")), str(reply.get("message", ""))[:300]
    except (ValueError, KeyError, TypeError):
        return Internal("QUERY_PROCESS_FAILED", "the query process failed")
    if kind is ErrorKind.INTERNAL or not _REASON.fullmatch(reason):
        return Internal("QUERY_PROCESS_FAILED", message or "the query process failed")
    return ERROR_CLASSES[kind](reason, message)
