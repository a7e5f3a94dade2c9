"""Checks every RPC request passes before its servicer sees it (run by the error boundary).

Invariant: no string or timestamp in a request can make PostgreSQL (or Python's own
datetime) fail later as an INTERNAL error, whatever service, RPC or field it is in:

- every string field, at any depth, in maps and repeated fields too, holds no NUL
  (``text`` and ``jsonb`` refuse it) and no lone surrogate (``INVALID_STRING``
  reasons ``NUL_CHARACTER`` / ``INVALID_UNICODE``, from ``core.strict_json``);
- every ``google.protobuf.Timestamp`` lies in the range the type itself defines,
  0001-01-01 to 9999-12-31 with nanos in [0, 1e9) (``INVALID_TIMESTAMP``): 2^62
  seconds would overflow ``datetime`` in the servicer and ``timestamptz`` in the database;
- a request that does not decode (invalid UTF-8 in a string, truncated bytes, nesting
  past protobuf's limit) is ``MALFORMED_REQUEST``, not an error in the server.

Field names in the error name the path (``tasks[2].worker_id``), never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from trace_platform.core import strict_json
from trace_platform.core.errors import InvalidArgument

TIMESTAMP = "google.protobuf.Timestamp"
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DEPTH = 100  # protobuf's own decoding limit


class Undecodable:
    """What a request that failed to decode becomes, so the boundary can refuse it."""


def safe_deserializer(inner: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if inner is None:
        return None
    deserialize = inner

    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, RecursionError: the bytes are the caller's fault
            return Undecodable()

    return decode


def _check_string(path: str, value: str) -> None:
    try:
        strict_json.check_text(value)
    except strict_json.JsonRefused as exc:
        raise InvalidArgument(exc.reason, f"{path}: {exc.message}", field=path) from None


def _check_timestamp(path: str, ts: Message) -> None:
    seconds, nanos = ts.seconds, ts.nanos  # type: ignore[attr-defined]
    if not (MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS and 0 <= nanos < 1_000_000_000):
        raise InvalidArgument("INVALID_TIMESTAMP", f"{path} is outside 0001-01-01..9999-12-31", field=path)


def check_request(request: object) -> None:
    """Raise ``InvalidArgument`` for the first field that breaks the invariant."""
    if isinstance(request, Undecodable):
        raise InvalidArgument("MALFORMED_REQUEST", "the request could not be decoded")
    if isinstance(request, Message):
        _check_message("", request, 0)


def _check_message(prefix: str, msg: Message, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument("MALFORMED_REQUEST", "the request is nested too deeply")
    if msg.DESCRIPTOR.full_name == TIMESTAMP:
        _check_timestamp(prefix or "timestamp", msg)
        return
    for field, value in msg.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.type == FieldDescriptor.TYPE_STRING:
            values = value if _repeated(field) else [value]
            for i, item in enumerate(values):
                _check_string(f"{path}[{i}]" if _repeated(field) else path, item)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            assert field.message_type is not None
            if field.message_type.GetOptions().map_entry:
                _check_map(path, field.message_type, value, depth)
            elif _repeated(field):
                for i, item in enumerate(value):
                    _check_message(f"{path}[{i}]", item, depth + 1)
            else:
                _check_message(path, value, depth + 1)


def _check_map(path: str, entry_type: Descriptor, mapping: Any, depth: int) -> None:
    key_field = entry_type.fields_by_name["key"]
    value_field = entry_type.fields_by_name["value"]
    for key, item in mapping.items():
        if key_field.type == FieldDescriptor.TYPE_STRING:
            _check_string(f"{path}.key", key)
        entry = f"{path}[{key!r}]" if key_field.type != FieldDescriptor.TYPE_STRING else f"{path}[]"
        if value_field.type == FieldDescriptor.TYPE_STRING:
            _check_string(entry, item)
        elif value_field.type == FieldDescriptor.TYPE_MESSAGE:
            _check_message(entry, item, depth + 1)


def _repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)
