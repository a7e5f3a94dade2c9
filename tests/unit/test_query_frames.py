"""The frames between the Query Service and its query processes: what comes back from a
process (which runs untrusted SQL) is checked, never trusted."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from trace_platform.core.errors import Internal, InvalidArgument, ResourceExhausted
from trace_platform.servers.query.frames import (
    HEADER,
    MAX_FRAME,
    FrameError,
    Kind,
    encode,
    encode_json,
    failure,
    failure_frame,
    read_frame,
)
from trace_platform.servers.query.worker import size_bytes
from trace_platform.servers.query.worker_loop import AnswerFrames


def _payload(frame: bytes) -> bytes:
    return frame[HEADER.size :]


def test_a_refusal_round_trips_with_its_kind_reason_and_message() -> None:
    sent = ResourceExhausted("QUERY_MEMORY_LIMIT", "query exceeded the memory limit")
    got = failure(_payload(failure_frame(sent)))
    assert (type(got), got.reason, got.message) == (ResourceExhausted, sent.reason, sent.message)


@pytest.mark.parametrize(
    "reply",
    [
        {"kind": "internal", "reason": "X"},
        {"kind": "no_such_kind", "reason": "QUERY_FAILED"},
        {"kind": "invalid_argument", "reason": "not a reason code"},
        {"kind": "invalid_argument", "reason": "A" * 65},
        {"kind": "invalid_argument"},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_refusal_becomes_internal(reply: object) -> None:
    got = failure(json.dumps(reply).encode())
    assert isinstance(got, Internal) and got.reason == "QUERY_PROCESS_FAILED"


def test_a_refusal_message_is_bounded() -> None:
    got = failure(json.dumps({"kind": "invalid_argument", "reason": "QUERY_INVALID", "message": "x" * 10_000}).encode())
    assert isinstance(got, InvalidArgument) and len(got.message) == 300


def test_anything_but_a_trace_error_leaves_no_text() -> None:
    assert json.loads(_payload(failure_frame(ValueError("secret row value")))) == {"kind": "internal", "message": ""}


async def _read(data: bytes) -> tuple[Kind, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await read_frame(reader)


async def test_frames_read_back_and_oversized_or_unknown_ones_are_refused() -> None:
    assert await _read(encode_json(Kind.DONE, {"truncated": True})) == (Kind.DONE, b'{"truncated": true}')
    with pytest.raises(FrameError):  # larger than any answer may be
        await _read(HEADER.pack(MAX_FRAME + 1, Kind.ROWS))
    with pytest.raises(FrameError):
        await _read(HEADER.pack(2, 99) + b"x")
    with pytest.raises(FrameError):  # the process ended mid-frame
        await _read(encode(Kind.ROWS, b"abcdef")[:-2])


def test_sizes_read_as_duckdb_reads_them() -> None:
    assert size_bytes("512MB") == 512 * 10**6
    assert size_bytes("1GB") == 10**9
    assert size_bytes("1.5 GiB") == 3 * 2**29
    assert size_bytes("4096") == 4096


def test_an_answer_leaves_in_as_few_writes_as_its_size_allows() -> None:
    """A point lookup's COLUMNS, ROWS and DONE reach the pipe in one write (the service
    wakes once), in order; a large answer still streams at FLUSH_BYTES."""
    writes: list[bytes] = []
    frames = AnswerFrames(writes.append, threading.Lock())
    small = [encode_json(Kind.COLUMNS, [["n", "BIGINT"]]), encode(Kind.ROWS, b"r"), encode_json(Kind.DONE, {})]
    for frame in small:
        frames.send(frame)
    assert writes == []
    frames.flush()
    frames.flush()  # nothing held: nothing written
    assert writes == [b"".join(small)]
    writes.clear()
    chunk = encode(Kind.ROWS, b"x" * (AnswerFrames.FLUSH_BYTES // 4))
    for _ in range(8):
        frames.send(chunk)
    assert len(writes) == 2 and all(len(w) >= AnswerFrames.FLUSH_BYTES for w in writes)
    frames.flush()
    assert b"".join(writes) == chunk * 8
