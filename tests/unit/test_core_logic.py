"""Fencing, validation, named queries, migrations and settings: pure logic."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from trace_platform.adapters.postgres.migrations import available_migrations
from trace_platform.adapters.postgres.queries import load, parse_named_queries
from trace_platform.core.config import settings_from_env
from trace_platform.core.errors import Aborted, InvalidArgument, NotFound
from trace_platform.core.fencing import LEASE_EXPIRED, Fence, FenceState, check_fence
from trace_platform.core.models import StorageRef, TaskRef, TaskStatus
from trace_platform.core.validation import require_json, require_slug, require_uuid

LEASE = str(uuid.uuid4())
REF = TaskRef(str(uuid.uuid4()), 2, LEASE)


@pytest.mark.parametrize(
    "state, expected",
    [
        (FenceState(TaskStatus.RUNNING, 2, LEASE), Fence.LIVE),
        (FenceState(TaskStatus.FAILED, 2, LEASE, LEASE_EXPIRED), Fence.LATE),
        (FenceState(TaskStatus.FAILED, 2, LEASE, "failed"), Fence.FINISHED),
        (FenceState(TaskStatus.COMPLETED, 2, LEASE, "completed"), Fence.FINISHED),
    ],
)
def test_fence_verdicts(state: FenceState, expected: Fence) -> None:
    assert check_fence(state, REF) is expected


def test_fence_refusals() -> None:
    with pytest.raises(NotFound):
        check_fence(None, REF)
    for attempt in (1, 3):  # older and (impossible) newer attempts alike
        with pytest.raises(Aborted) as stale:
            check_fence(FenceState(TaskStatus.RUNNING, attempt, LEASE), REF)
        assert stale.value.reason == "STALE_ATTEMPT"
    for lease in (str(uuid.uuid4()), None):
        with pytest.raises(Aborted) as wrong:
            check_fence(FenceState(TaskStatus.RUNNING, 2, lease), REF)
        assert wrong.value.reason == "LEASE_MISMATCH"


def test_validation_reasons() -> None:
    assert require_uuid("x", "0B927ED8-8276-401A-9139-6572B4B6EE44") == "0b927ed8-8276-401a-9139-6572b4b6ee44"
    with pytest.raises(InvalidArgument) as missing:
        require_uuid("x", "")
    assert missing.value.reason == "MISSING_FIELD" and missing.value.metadata == {"field": "x"}
    with pytest.raises(InvalidArgument):
        require_slug("op", "Op")
    assert require_json("c", "", dict, 10, {}) == {}
    with pytest.raises(InvalidArgument) as big:
        require_json("c", '{"a": 1}', dict, 3, {})
    assert big.value.reason == "PAYLOAD_TOO_LARGE"


def test_storage_ref_rules() -> None:
    assert StorageRef.from_dict({"scheme": "file", "prefix": "/d/"}).glob == "*.parquet"
    for bad in ({"scheme": "http", "prefix": "x"}, {"scheme": "s3", "prefix": "x"}, {"scheme": "file", "prefix": ""}):
        with pytest.raises(ValueError):
            StorageRef.from_dict(bad)


def test_named_queries_parse_and_reject_duplicates() -> None:
    assert parse_named_queries("-- name: a\nSELECT 1;\n-- name: b\nSELECT 2;") == {"a": "SELECT 1;", "b": "SELECT 2;"}
    with pytest.raises(ValueError):
        parse_named_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")
    assert {"claim_task", "heartbeat", "reap_expired_leases", "requeue_due_retries"} <= load("tasks").keys()


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) == list(range(1, len(versions) + 1))


def test_settings_from_env_reads_explicit_values_only(tmp_path: Path) -> None:
    s = settings_from_env({"TRACE_DATA_DIR": str(tmp_path), "TRACE_LEASE_SECONDS": "7", "TRACE_OUTBOX_BATCH": "9"})
    assert s.data_dir == tmp_path and s.dispatcher.lease_seconds == 7.0 and s.dispatcher.outbox_batch == 9
    assert s.database_url is None and s.tokens.dev_hs256_secret is None
