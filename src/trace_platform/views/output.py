"""How the CLI and Lite print values: the field's conventions, machine-readable where asked.

- Binary values (hashes, addresses) are ``0x``-prefixed lowercase hex, in tables, JSON
  and CSV alike; Parquet keeps them binary.
- JSON keeps protobuf int64 fields as numbers (``MessageToDict`` makes them strings)
  and bytes fields as 0x hex (``MessageToDict`` makes them base64).
- CSV and Parquet are written one record batch at a time: memory stays at one batch
  whatever the size of the result.
"""

from __future__ import annotations

import json
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    from google.protobuf.message import Message

    from trace_platform.clients.api.query import QueryRows


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()


def cell(value: Any) -> str:
    """One table cell."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes | bytearray | memoryview):
        return hex0x(bytes(value))
    return str(value)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for what a query row may hold besides JSON's own types."""
    if isinstance(value, bytes | bytearray | memoryview):
        return hex0x(bytes(value))
    isoformat = getattr(value, "isoformat", None)  # datetime, date, time
    if callable(isoformat):
        return isoformat()
    return str(value)  # Decimal, UUID, ...


def dumps(doc: Any, **kwargs: Any) -> str:
    return json.dumps(doc, default=json_default, **kwargs)


# FieldDescriptor.TYPE_INT64, TYPE_UINT64, TYPE_FIXED64, TYPE_SFIXED64, TYPE_SINT64
_INT64_TYPES = frozenset({3, 4, 6, 16, 18})
_TYPE_MESSAGE = 11
_TYPE_BYTES = 12


def message_dict(message: Message, *, all_fields: bool = True) -> dict[str, Any]:
    """A protobuf message as a JSON-ready dict: proto field names, enums by name,
    64-bit integers as numbers (they fit JSON numbers in every parser we target) and
    bytes as 0x hex (MessageToDict gives strings and base64)."""
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=all_fields)
    _field_conventions(message.DESCRIPTOR, doc)
    return doc


def _b64_to_hex(value: str) -> str:
    import base64

    return hex0x(base64.b64decode(value))


def _field_conventions(descriptor: Any, doc: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        repeated = isinstance(value, list)
        if field.type in _INT64_TYPES:
            doc[field.name] = [int(v) for v in value] if repeated else int(value)
            continue
        if field.type == _TYPE_BYTES:
            doc[field.name] = [_b64_to_hex(v) for v in value] if repeated else _b64_to_hex(value)
            continue
        sub = field.message_type
        # Well-known types (Timestamp, Duration, Struct...) have their own JSON forms.
        if field.type != _TYPE_MESSAGE or sub is None or sub.full_name.startswith("google.protobuf."):
            continue
        if sub.GetOptions().map_entry:
            value_field = sub.fields_by_name["value"]
            if value_field.type in _INT64_TYPES:
                doc[field.name] = {k: int(v) for k, v in value.items()}
            elif value_field.type == _TYPE_MESSAGE and value_field.message_type is not None:
                for v in value.values():
                    _field_conventions(value_field.message_type, v)
            continue
        for item in value if repeated else [value]:
            _field_conventions(sub, item)


def _text_column(array: pa.Array) -> pa.Array:
    """A column as CSV writes it: binary as 0x hex, nested values as JSON text."""
    import pyarrow as pa

    t = array.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.array([None if v is None else hex0x(v) for v in array.to_pylist()], pa.string())
    if pa.types.is_nested(t):
        return pa.array([None if v is None else dumps(v) for v in array.to_pylist()], pa.string())
    return array


def csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([_text_column(c) for c in batch.columns], names=batch.schema.names)


class BatchWriter:
    """Writes record batches to a CSV or Parquet sink as they come."""

    def __init__(self, fmt: str, sink: IO[bytes]) -> None:
        self._fmt = fmt
        self._sink = sink
        self._writer: pa_csv.CSVWriter | pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if self._fmt == "csv":
            import pyarrow.csv as pa_csv

            batch = csv_batch(batch)
            if self._writer is None:
                self._writer = pa_csv.CSVWriter(self._sink, batch.schema)
        else:
            import pyarrow.parquet as pq

            if self._writer is None:
                self._writer = pq.ParquetWriter(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def render_table(result: QueryRows) -> str:
    headers = [name for name, _ in result.columns]
    cells = [[cell(v) for v in row] for row in result.rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "-+-".join("-" * w for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    count = f"({len(cells)} row{'s' if len(cells) != 1 else ''}{', truncated' if result.truncated else ''})"
    return "\n".join([*out, count])


def render_json(result: QueryRows) -> str:
    doc = {
        "columns": [{"name": n, "type": t} for n, t in result.columns],
        "rows": result.rows,
        "truncated": result.truncated,
        "dataset_version": result.dataset_version,
        "versions": result.versions,  # relation -> the dataset version it read
    }
    return dumps(doc)
