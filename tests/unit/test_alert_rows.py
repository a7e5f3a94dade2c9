"""Strict alert_events row validation: every refusal has a reason code and a row number."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from trace_platform.core.alert_rows import (
    MAX_DEDUPE_KEY_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_ROW_BYTES,
    BatchRejected,
    parse_batch,
)

H = "0x" + "ab" * 32
DEF = "5b0c8f9e-4a8e-4c1e-9d6a-0f1e2d3c4b5a"


def good(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "dedupe_key": "def1:0xabc:7",
        "event_time": "2026-01-02T03:04:05Z",
        "alert_definition_id": DEF,
        "severity": "critical",
        "chain_id": 1,
        "block_number": 123,
        "block_hash": H,
        "tx_hash": H.upper().replace("0X", "0x"),
        "payload": {"value": "1000", "nested": [1, 2.5, {"a": None}]},
    }
    row.update(over)
    return row


def jsonl(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def rejected(data: bytes, max_rows: int = 1000) -> BatchRejected:
    with pytest.raises(BatchRejected) as exc:
        parse_batch(data, max_rows)
    return exc.value


def test_good_batch_parses_and_normalizes() -> None:
    rows = parse_batch(jsonl(good(), good(dedupe_key="k2", severity=None, payload=None)), 10)
    assert len(rows) == 2
    first = rows[0]
    assert first.event_time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert first.tx_hash == H  # lowercased
    assert first.alert_definition_id == DEF
    assert json.loads(first.payload_json) == {"value": "1000", "nested": [1, 2.5, {"a": None}]}
    assert rows[1].payload_json == "{}"
    assert rows[1].severity is None


def test_minimal_row_and_timestamp_forms() -> None:
    rows = parse_batch(
        jsonl(
            {"dedupe_key": "a", "event_time": "2026-01-02T03:04:05.123456789+02:00"},
            {"dedupe_key": "b", "event_time": "2026-01-02t03:04:05.5z"},
        ),
        10,
    )
    assert rows[0].event_time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert rows[1].event_time.microsecond == 500000
    assert rows[0].alert_definition_id is None and rows[0].payload_json == "{}"


def test_empty_batch_and_crlf() -> None:
    assert parse_batch(b"", 10) == []
    assert len(parse_batch(json.dumps(good()).encode() + b"\r\n", 10)) == 1
    assert len(parse_batch(json.dumps(good()).encode(), 10)) == 1  # no final newline


BAD_ROWS: list[tuple[Any, str]] = [
    (good(org_id="00000000-0000-0000-0000-000000000001"), "FORBIDDEN_FIELD"),
    (good(producer_task_id=DEF), "FORBIDDEN_FIELD"),
    (good(id=DEF), "FORBIDDEN_FIELD"),
    (good(extra=1), "UNKNOWN_FIELD"),
    (good(Severity="info"), "UNKNOWN_FIELD"),
    ({k: v for k, v in good().items() if k != "dedupe_key"}, "MISSING_FIELD"),
    ({k: v for k, v in good().items() if k != "event_time"}, "MISSING_FIELD"),
    (good(dedupe_key=""), "INVALID_LENGTH"),
    (good(dedupe_key="x" * (MAX_DEDUPE_KEY_CHARS + 1)), "INVALID_LENGTH"),
    (good(dedupe_key=7), "INVALID_TYPE"),
    (good(dedupe_key="a\x00b"), "NUL_CHARACTER"),
    (good(event_time="2026-01-02"), "INVALID_TIMESTAMP"),
    (good(event_time="2026-01-02T03:04:05"), "INVALID_TIMESTAMP"),  # no zone
    (good(event_time="2026-13-02T03:04:05Z"), "INVALID_TIMESTAMP"),
    (good(event_time="2026-02-30T03:04:05Z"), "INVALID_TIMESTAMP"),
    (good(event_time=1767322000), "INVALID_TIMESTAMP"),
    (good(event_time="yesterday"), "INVALID_TIMESTAMP"),
    (good(severity="fatal"), "INVALID_SEVERITY"),
    (good(severity="CRITICAL"), "INVALID_SEVERITY"),
    (good(severity=3), "INVALID_SEVERITY"),
    (good(chain_id=-1), "OUT_OF_RANGE"),
    (good(block_number=1 << 63), "OUT_OF_RANGE"),
    (good(block_number=1.5), "INVALID_TYPE"),
    (good(block_number="12"), "INVALID_TYPE"),
    (good(chain_id=True), "INVALID_TYPE"),
    (good(block_hash="abcd"), "INVALID_HASH"),
    (good(block_hash="0x" + "zz" * 32), "INVALID_HASH"),
    (good(tx_hash="0x" + "ab" * 31), "INVALID_HASH"),
    (good(tx_hash=12), "INVALID_HASH"),
    (good(alert_definition_id="not-a-uuid"), "INVALID_UUID"),
    (good(alert_definition_id=DEF.replace("-", "")), "INVALID_UUID"),
    (good(source_dataset_uuid=5), "INVALID_UUID"),
    (good(partition_key="p" * 257), "INVALID_LENGTH"),
    (good(cursor_value=12), "INVALID_TYPE"),
    (good(payload=[1, 2]), "INVALID_TYPE"),
    (good(payload="{}"), "INVALID_TYPE"),
    (good(payload={"big": "x" * MAX_PAYLOAD_BYTES}), "PAYLOAD_TOO_LARGE"),
    (good(payload={"s": "nul\x00"}), "NUL_CHARACTER"),
    (good(payload={"k\x00": 1}), "NUL_CHARACTER"),
    (b'{"dedupe_key": "a", "event_time": "2026-01-02T03:04:05Z", "payload": {"s": "\\ud800"}}', "INVALID_UNICODE"),
    (b'{"dedupe_key": "a", "event_time": "2026-01-02T03:04:05Z", "payload": {"n": NaN}}', "INVALID_JSON"),
    (b'{"dedupe_key": "a", "event_time": "2026-01-02T03:04:05Z", "payload": {"n": 1e400}}', "INVALID_JSON"),
    (b'{"dedupe_key": "a", "dedupe_key": "b", "event_time": "2026-01-02T03:04:05Z"}', "DUPLICATE_FIELD"),
    (
        b'{"dedupe_key": "a", "event_time": "2026-01-02T03:04:05Z", "payload": ' + b"[" * 40 + b"]" * 40 + b"}",
        "PAYLOAD_TOO_DEEP",  # the strict parser bounds depth before any field is looked at
    ),
    (
        b'{"dedupe_key": "a", "event_time": "2026-01-02T03:04:05Z", "payload": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
        "PAYLOAD_TOO_DEEP",
    ),
    (b"[1, 2]", "NOT_AN_OBJECT"),
    (b'"row"', "NOT_AN_OBJECT"),
    (b"null", "NOT_AN_OBJECT"),
    (b"{not json", "INVALID_JSON"),
    (b'{"dedupe_key": "a"', "INVALID_JSON"),
    (b"\xff\xfe{}", "INVALID_UTF8"),
    (b"   ", "EMPTY_ROW"),
    (b"", "EMPTY_ROW"),
    (b'{"payload": {"x": "' + b"y" * MAX_ROW_BYTES + b'"}}', "ROW_TOO_LARGE"),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_ROWS, ids=[f"{i}-{r}" for i, (_, r) in enumerate(BAD_ROWS)])
def test_one_bad_row_rejects_the_batch_with_reason_and_row_number(bad: Any, reason: str) -> None:
    err = rejected(jsonl(good(dedupe_key="k1"), good(dedupe_key="k2"), bad, good(dedupe_key="k4")))
    assert err.reason == reason
    assert err.row_number == 3


def test_field_is_named_and_forbidden_org_is_reported() -> None:
    err = rejected(jsonl(good(org_id="x")))
    assert (err.reason, err.row_number, err.field) == ("FORBIDDEN_FIELD", 1, "org_id")
    err = rejected(jsonl(good(), good(block_hash="0x1")))
    assert (err.reason, err.row_number, err.field) == ("INVALID_HASH", 2, "block_hash")


def test_first_bad_row_is_reported() -> None:
    err = rejected(jsonl(good(), good(extra=1), good(severity="nope")))
    assert (err.reason, err.row_number) == ("UNKNOWN_FIELD", 2)


def test_row_count_cap() -> None:
    assert len(parse_batch(jsonl(*[good(dedupe_key=f"k{i}") for i in range(5)]), 5)) == 5
    err = rejected(jsonl(*[good(dedupe_key=f"k{i}") for i in range(6)]), max_rows=5)
    assert (err.reason, err.row_number) == ("TOO_MANY_ROWS", 0)


def test_blank_line_between_rows_is_refused() -> None:
    err = rejected(jsonl(good()) + b"\n" + jsonl(good()))
    assert (err.reason, err.row_number) == ("EMPTY_ROW", 2)
