"""Pure pieces of the Query Service: prefix checks, limit clamping, user tokens, column
references for the PII audit, result values."""

from __future__ import annotations

import datetime as dt
import decimal
import time

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trace_platform.core.errors import PermissionDenied, Unauthenticated
from trace_platform.core.sql_columns import column_refs
from trace_platform.core.sql_gate import check_sql
from trace_platform.core.storage_paths import is_relative_key, is_under, join, normalize_prefix, require_under_any
from trace_platform.core.user_tokens import UserTokenVerifier, issue_user_token
from trace_platform.core.validation import clamp_limit
from trace_platform.servers.query.results import rows_pb, value_pb

SECRET = "s" * 32
ORG = "00000000-0000-0000-0000-0000000000aa"


@pytest.mark.parametrize(
    ("uri", "prefix", "inside"),
    [
        ("s3://b/data/v1/x.parquet", "s3://b/data/", True),
        ("s3://b/data/v1/", "s3://b/data", True),
        ("s3://b/data2/x.parquet", "s3://b/data", False),
        ("s3://other/data/x", "s3://b/data/", False),
        ("s3://b/data/../secret/x", "s3://b/data/", False),
        ("s3://b/data/./x", "s3://b/data/", False),
        ("s3://b/data//x", "s3://b/data/", False),
        ("file:///srv/objects/a.parquet", "file:///srv/objects", True),
        ("file:///srv/objects-evil/a.parquet", "file:///srv/objects", False),
        ("file://host/srv/objects/a", "file:///srv/objects", False),
        ("http://b/data/x", "http://b/data/", False),
        ("s3://b/data/x\\y", "s3://b/data/", False),
        ("s3://b/data/x?y=1", "s3://b/data/", False),
    ],
)
def test_is_under(uri: str, prefix: str, inside: bool) -> None:
    assert is_under(uri, prefix) is inside


def test_require_under_any_denies_by_default() -> None:
    with pytest.raises(PermissionDenied) as exc:
        require_under_any("s3://b/x/y", (), "STORAGE_NOT_GRANTED")
    assert exc.value.reason == "STORAGE_NOT_GRANTED"
    require_under_any("s3://b/x/y", ("s3://a/", "s3://b/x/"), "STORAGE_NOT_GRANTED")


@pytest.mark.parametrize("key", ["../x.parquet", "/abs.parquet", "a//b.parquet", "s3://x/y", "a/", "", "a\\b"])
def test_relative_keys_cannot_escape(key: str) -> None:
    assert not is_relative_key(key)
    with pytest.raises(PermissionDenied):
        join("s3://b/p/", key)


@given(st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.parquet"]), min_size=1, max_size=6))
def test_joined_keys_stay_under_their_prefix(parts: list[str]) -> None:
    key = "/".join(parts)
    if is_relative_key(key):
        assert is_under(join("s3://b/p/", key), "s3://b/p/")
        assert normalize_prefix(join("s3://b/p/", key)) is not None


@pytest.mark.parametrize(("limit", "expected"), [(0, 1000), (-5, 1), (1, 1), (10_000, 10_000), (10**9, 10_000)])
def test_clamp_limit(limit: int, expected: int) -> None:
    assert clamp_limit(limit, 1000, 10_000) == expected


def test_user_token_round_trip_and_refusals() -> None:
    verifier = UserTokenVerifier("trace-lite", hs256_secret=SECRET)
    claims = verifier.verify(issue_user_token(SECRET, issuer="trace-lite", subject="ada", org_id=ORG))
    assert (claims.subject, claims.org_id) == ("ada", ORG)
    now = time.time()
    refused = {
        None: "USER_TOKEN_MISSING",
        "x.y.z": "USER_TOKEN_INVALID",
        issue_user_token(SECRET, issuer="other", subject="ada", org_id=ORG): "USER_TOKEN_INVALID",
        issue_user_token(SECRET, issuer="trace-lite", subject="ada", org_id="nope"): "USER_TOKEN_INVALID",
        issue_user_token(SECRET, issuer="trace-lite", subject="ada", org_id=ORG, now=now - 10**6): "USER_TOKEN_EXPIRED",
        jwt.encode(
            {
                "iss": "trace-lite",
                "aud": "trace.task",
                "sub": "a",
                "org_id": ORG,
                "iat": int(now),
                "exp": int(now) + 60,
            },
            SECRET,
            "HS256",
        ): "USER_TOKEN_INVALID",  # task audience
        jwt.encode({"sub": "a", "org_id": ORG}, None, "none"): "USER_TOKEN_INVALID",
    }
    for token, reason in refused.items():
        with pytest.raises(Unauthenticated) as exc:
            verifier.verify(token)
        assert exc.value.reason == reason
    # No secret configured: HS256 tokens are refused outright (deny by default).
    with pytest.raises(Unauthenticated):
        UserTokenVerifier("trace-lite").verify(issue_user_token(SECRET, issuer="trace-lite", subject="a", org_id=ORG))


@pytest.mark.parametrize(
    ("sql", "classified"),
    [
        ("SELECT block_number FROM dataset", ()),
        ("SELECT count(*) FROM dataset", ()),
        ("SELECT email FROM dataset", ("email",)),
        ("SELECT upper(d.EMAIL) FROM dataset d", ("email",)),
        ("SELECT * FROM dataset", ("email", "ssn")),
        ("SELECT * EXCLUDE (ssn) FROM dataset", ("email", "ssn")),
        ("SELECT dataset FROM dataset", ("email", "ssn")),
        ("WITH t AS (SELECT ssn FROM dataset) SELECT count(*) FROM t", ("ssn",)),
        ("SELECT block_number FROM dataset WHERE ssn IS NOT NULL", ("ssn",)),
    ],
)
def test_pii_columns_read(sql: str, classified: tuple[str, ...]) -> None:
    assert column_refs(check_sql(sql)).classified(["email", "ssn"]) == classified


def test_result_values_keep_their_kind() -> None:
    assert value_pb(None).null_value
    assert value_pb(True).bool_value is True
    assert value_pb(2**63).string_value == str(2**63)  # beyond int64: exact as text
    assert value_pb(1.5).double_value == 1.5
    assert value_pb(b"\x01").bytes_value == b"\x01"
    assert value_pb(dt.date(2026, 1, 2)).string_value == "2026-01-02"
    assert value_pb(decimal.Decimal("1.50")).string_value == "1.50"
    assert value_pb({"k": [1, 2]}).string_value == '{"k": [1, 2]}'
    row = rows_pb([(7, decimal.Decimal("1.25"), 2**70)])[0]
    assert row.values[0].int_value == 7 and row.values[1].string_value == "1.25"
    assert row.values[2].string_value == str(2**70)  # HUGEINT beyond int64 stays exact
