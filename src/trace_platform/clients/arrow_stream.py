"""Decoding an Arrow IPC stream that arrives in chunks (QueryArrow), batch by batch.

The server sends each record batch as one message of the gRPC stream, but nothing here
relies on it: bytes are buffered until a whole IPC message is there, so a consumer holds
at most one message beyond the batch it is handling, never the whole result.
"""

from __future__ import annotations

import pyarrow as pa

from trace_platform.core.errors import Internal


class IpcStreamDecoder:
    """Feed chunks of one Arrow IPC stream; get the record batches completed so far."""

    def __init__(self) -> None:
        self._buf = b""
        self.schema: pa.Schema | None = None
        self.ended = False

    def feed(self, data: bytes) -> list[pa.RecordBatch]:
        self._buf += data
        batches: list[pa.RecordBatch] = []
        while self._buf and not self.ended:
            reader = pa.BufferReader(self._buf)
            try:
                message = pa.ipc.read_message(reader)
            except EOFError:  # the end-of-stream marker
                self.ended, self._buf = True, b""
                break
            except (OSError, pa.ArrowInvalid):  # an incomplete message: wait for more bytes
                break
            self._buf = self._buf[reader.tell() :]
            if message.type == "schema":
                self.schema = pa.ipc.read_schema(message)
            elif message.type == "record batch" and self.schema is not None:
                batches.append(pa.ipc.read_record_batch(message, self.schema))
            else:
                raise Internal("ARROW_STREAM_INVALID", f"unexpected Arrow IPC message: {message.type}")
        return batches

    def finish(self) -> pa.Schema:
        """The stream's schema, once it ended whole (raises if it was cut short)."""
        if self.schema is None or not self.ended:
            raise Internal("ARROW_STREAM_INVALID", "the Arrow IPC stream ended before its end-of-stream marker")
        return self.schema
