"""Strict validation of an ``alert_events`` batch artifact (JSON lines, UTF-8).

One bad row rejects the whole batch: ``parse_batch`` raises ``BatchRejected`` with a
reason code and the 1-based number of the first offending row (0 when the batch as a
whole is unusable). Tenant and producer attribution never come from a row: a row that
names ``org_id`` or a producer id is refused; the sink takes them from the trusted
publish record. Values are checked so that PostgreSQL cannot refuse them later (the
strict JSON parser: no NUL characters, no lone surrogates, no NaN; bounded integers;
an ``event_time`` between 0001 and 9999 in UTC), so a batch that passes here cannot
fail on insert for its content.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from trace_platform.core import strict_json

MAX_DEDUPE_KEY_CHARS = 512
MAX_TEXT_CHARS = 256
MAX_ROW_BYTES = 128 * 1024
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_BIGINT = (1 << 63) - 1
SEVERITIES = frozenset({"info", "warning", "critical"})

# Attribution the platform assigns; naming it in a row is an attempt to forge it.
FORBIDDEN_FIELDS = frozenset({"org_id", "producer_task_id", "producer_job_id", "id", "created_at"})
ALLOWED_FIELDS = frozenset(
    {
        "dedupe_key",
        "event_time",
        "alert_definition_id",
        "severity",
        "chain_id",
        "block_number",
        "block_hash",
        "tx_hash",
        "source_dataset_uuid",
        "partition_key",
        "cursor_value",
        "payload",
    }
)
_HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")
# RFC 3339 date-time: full date, 'T' (or 't'/' '), time with optional fraction, and a zone.
_RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


class BatchRejected(Exception):
    """The batch is refused as a whole. ``row_number`` is 1-based; 0 means the batch itself."""

    def __init__(self, reason: str, row_number: int, field: str = "") -> None:
        super().__init__(f"{reason} at row {row_number}" + (f" ({field})" if field else ""))
        self.reason = reason
        self.row_number = row_number
        self.field = field


@dataclass(frozen=True)
class AlertRow:
    dedupe_key: str
    event_time: datetime
    payload_json: str
    alert_definition_id: str | None = None
    severity: str | None = None
    chain_id: int | None = None
    block_number: int | None = None
    block_hash: str | None = None
    tx_hash: str | None = None
    source_dataset_uuid: str | None = None
    partition_key: str | None = None
    cursor_value: str | None = None


class _RowError(Exception):
    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


# The strict parser's reasons, named as this format has always named them.
_ROW_REASONS = {
    "JSON_TOO_DEEP": "PAYLOAD_TOO_DEEP",
    "DUPLICATE_KEY": "DUPLICATE_FIELD",
    "PAYLOAD_TOO_LARGE": "ROW_TOO_LARGE",
}


def _text(row: dict[str, Any], field: str, max_chars: int, required: bool = False) -> str | None:
    value = row.get(field)
    if value is None:
        if required:
            raise _RowError("MISSING_FIELD", field)
        return None
    if not isinstance(value, str):
        raise _RowError("INVALID_TYPE", field)
    if not value or len(value) > max_chars:
        raise _RowError("INVALID_LENGTH", field)
    return value  # the strict parser refused NUL and lone surrogates


def _uint(row: dict[str, Any], field: str) -> int | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _RowError("INVALID_TYPE", field)
    if not 0 <= value <= MAX_BIGINT:
        raise _RowError("OUT_OF_RANGE", field)
    return value


def _uuid(row: dict[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 36:
        raise _RowError("INVALID_UUID", field)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _RowError("INVALID_UUID", field) from None


def _hash(row: dict[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or not _HASH_RE.match(value):
        raise _RowError("INVALID_HASH", field)
    return value.lower()


def _event_time(row: dict[str, Any]) -> datetime:
    value = row.get("event_time")
    if value is None:
        raise _RowError("MISSING_FIELD", "event_time")
    if not isinstance(value, str) or not _RFC3339_RE.match(value):
        raise _RowError("INVALID_TIMESTAMP", "event_time")
    text = value.upper().replace(" ", "T")
    if "." in text:  # Python keeps microseconds: truncate nanosecond fractions.
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        assert digits is not None
        text = f"{head}.{digits.group()[:6].ljust(6, '0')}{tail[digits.end() :]}"
    try:
        # In UTC, as it is stored: "9999-12-31T23:59:59-01:00" is year 10000 there and
        # "0001-01-01T00:00:00+01:00" year 0, which no driver can encode (OverflowError).
        # Within 0001..9999 UTC, PostgreSQL's timestamptz stores every value.
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _RowError("INVALID_TIMESTAMP", "event_time") from None


def parse_row(line: bytes) -> AlertRow:
    """One JSONL line to a validated row; raises ``_RowError``."""
    if len(line) > MAX_ROW_BYTES:
        raise _RowError("ROW_TOO_LARGE")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _RowError("INVALID_UTF8") from None
    if not text.strip():
        raise _RowError("EMPTY_ROW")
    try:
        # The row is depth 1, so its payload may nest MAX_PAYLOAD_DEPTH levels.
        row = strict_json.loads(text, max_bytes=MAX_ROW_BYTES, max_depth=MAX_PAYLOAD_DEPTH + 1)
    except strict_json.JsonRefused as exc:
        raise _RowError(_ROW_REASONS.get(exc.reason, exc.reason)) from None
    if not isinstance(row, dict):
        raise _RowError("NOT_AN_OBJECT")
    for key in row:
        if key in FORBIDDEN_FIELDS:
            raise _RowError("FORBIDDEN_FIELD", key)
        if key not in ALLOWED_FIELDS:
            raise _RowError("UNKNOWN_FIELD", key[:64])
    severity = row.get("severity")
    if severity is not None and (not isinstance(severity, str) or severity not in SEVERITIES):
        raise _RowError("INVALID_SEVERITY", "severity")
    payload = row.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise _RowError("INVALID_TYPE", "payload")
    payload_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if len(payload_json.encode()) > MAX_PAYLOAD_BYTES:
        raise _RowError("PAYLOAD_TOO_LARGE", "payload")
    dedupe_key = _text(row, "dedupe_key", MAX_DEDUPE_KEY_CHARS, required=True)
    assert dedupe_key is not None
    return AlertRow(
        dedupe_key=dedupe_key,
        event_time=_event_time(row),
        payload_json=payload_json,
        alert_definition_id=_uuid(row, "alert_definition_id"),
        severity=severity,
        chain_id=_uint(row, "chain_id"),
        block_number=_uint(row, "block_number"),
        block_hash=_hash(row, "block_hash"),
        tx_hash=_hash(row, "tx_hash"),
        source_dataset_uuid=_uuid(row, "source_dataset_uuid"),
        partition_key=_text(row, "partition_key", MAX_TEXT_CHARS),
        cursor_value=_text(row, "cursor_value", MAX_TEXT_CHARS),
    )


def _lines(data: bytes) -> Iterator[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last row
    for line in lines:
        yield line[:-1] if line.endswith(b"\r") else line


def parse_batch(data: bytes, max_rows: int) -> list[AlertRow]:
    """Every row of the batch, or ``BatchRejected`` for the first bad one."""
    rows: list[AlertRow] = []
    for number, line in enumerate(_lines(data), start=1):
        if number > max_rows:
            raise BatchRejected("TOO_MANY_ROWS", 0)
        try:
            rows.append(parse_row(line))
        except _RowError as err:
            raise BatchRejected(err.reason, number, err.field) from None
    return rows
