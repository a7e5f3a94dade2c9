"""Query results on the wire: typed columns and rows, or an Arrow IPC stream."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from trace_platform.gen.trace.v1 import common_pb2

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def columns_pb(columns: Iterable[tuple[str, str]]) -> list[common_pb2.Column]:
    return [common_pb2.Column(name=name, type=type_name) for name, type_name in columns]


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def value_pb(value: Any) -> common_pb2.Value:
    """Scalars map to their kind; wide integers, decimals, times and nested values travel
    as strings (the column's DuckDB type says how to read them)."""
    if value is None:
        return common_pb2.Value(null_value=True)
    if isinstance(value, bool):
        return common_pb2.Value(bool_value=value)
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return common_pb2.Value(int_value=value)
        return common_pb2.Value(string_value=str(value))
    if isinstance(value, float):
        return common_pb2.Value(double_value=value)
    if isinstance(value, str):
        return common_pb2.Value(string_value=value)
    if isinstance(value, bytes):
        return common_pb2.Value(bytes_value=value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return common_pb2.Value(string_value=value.isoformat())
    if isinstance(value, decimal.Decimal | uuid.UUID | dt.timedelta):
        return common_pb2.Value(string_value=str(value))
    return common_pb2.Value(string_value=json.dumps(value, default=_json_default, sort_keys=True))


def rows_pb(rows: Sequence[Sequence[Any]]) -> list[common_pb2.Row]:
    return [common_pb2.Row(values=[value_pb(v) for v in row]) for row in rows]


class ArrowIpcChunks:
    """Writes one Arrow IPC stream and hands out the bytes produced so far, so each record
    batch becomes one message of the server stream (concatenated they form the stream)."""

    def __init__(self, schema: pa.Schema) -> None:
        self._pending: list[bytes] = []
        self._writer = pa.ipc.new_stream(self, schema)

    # File-like sink used by the IPC writer.
    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._pending.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def closed(self) -> bool:
        return False

    def take(self) -> bytes:
        data = b"".join(self._pending)
        self._pending.clear()
        return data

    def batch(self, batch: pa.RecordBatch) -> bytes:
        self._writer.write_batch(batch)
        return self.take()

    def finish(self) -> bytes:
        self._writer.close()
        return self.take()
