"""The STS session policy built from a capability token's prefixes: exactly the granted
prefixes (GetObject on reads, PutObject on writes, ListBucket under them), nothing else,
bounded by the token's expiry; odd prefixes refused before STS is called."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trace_platform.adapters.aws.sts import MIN_DURATION_SECONDS, duration_seconds, session_policy
from trace_platform.core.errors import FailedPrecondition, InvalidArgument

NOT_AFTER = 1_900_000_000.0  # 2030-03-17T17:46:40Z
UNTIL = {"DateLessThan": {"aws:CurrentTime": "2030-03-17T17:46:40Z"}}


def policy(reads: list[str], writes: list[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(session_policy(reads, writes, NOT_AFTER))
    return parsed


def test_reads_and_writes_get_exactly_their_actions_and_prefixes() -> None:
    doc = policy(["s3://data/datasets/d1/v3/", "s3://data/datasets/d2/v1"], ["s3://scratch/t/7/1/"])
    assert doc == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Read",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": ["arn:aws:s3:::data/datasets/d1/v3/*", "arn:aws:s3:::data/datasets/d2/v1/*"],
                "Condition": UNTIL,
            },
            {
                "Sid": "Write",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": ["arn:aws:s3:::scratch/t/7/1/*"],
                "Condition": UNTIL,
            },
            {
                "Sid": "List0",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::data",
                "Condition": {"StringLike": {"s3:prefix": ["datasets/d1/v3/*", "datasets/d2/v1/*"]}, **UNTIL},
            },
            {
                "Sid": "List1",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::scratch",
                "Condition": {"StringLike": {"s3:prefix": ["t/7/1/*"]}, **UNTIL},
            },
        ],
    }


def test_nothing_beyond_the_grant() -> None:
    doc = policy(["s3://data/a/"], [])
    actions = {s["Action"] for s in doc["Statement"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}  # a read-only token cannot write
    assert all(s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s for s in doc["Statement"])
    text = json.dumps(doc)
    assert text.count("*") == 2  # the one trailing wildcard per granted prefix, nowhere else
    assert "s3:*" not in text and '"*"' not in text and "arn:aws:s3:::data/*" not in text
    # A trailing slash is always there, so "a/" never matches the sibling "ab/".
    assert doc["Statement"][0]["Resource"] == ["arn:aws:s3:::data/a/*"]
    assert all("Condition" in s and "DateLessThan" in s["Condition"] for s in doc["Statement"])


def test_deterministic_and_deduplicated() -> None:
    one = session_policy(["s3://bk1/x/", "s3://bk1/x", "s3://bk1/a/"], [], NOT_AFTER)
    two = session_policy(["s3://bk1/a/", "s3://bk1/x/"], [], NOT_AFTER)
    assert one == two
    assert " " not in one  # packed: STS counts the characters


@pytest.mark.parametrize(
    "prefix",
    [
        "s3://data/",  # a bucket root: the whole bucket
        "s3://data",
        "s3://data/a/../b/",
        "s3://data/./a/",
        "s3://data//a/",
        "s3://data/a/*/",
        "s3://data/a?/",
        "s3://data/${aws:username}/",
        "s3://data/a b/",
        's3://data/a"/',
        "s3://data/a\\b/",
        "s3://data/a\n/",
        "s3://*/a/",
        "s3://Data/a/",  # not a bucket name
        "s3://d/a/",
        "s3://data..x/a/",
        "file:///data/a/",
        "https://data/a/",
        "data/a/",
        "",
        "s3://data/a/?x=1",
        "s3://data/a/#f",
    ],
)
def test_odd_prefixes_are_refused(prefix: str) -> None:
    for reads, writes in (([prefix], []), ([], [prefix]), (["s3://data/ok/"], [prefix])):
        with pytest.raises(InvalidArgument) as err:
            session_policy(reads, writes, NOT_AFTER)
        assert err.value.reason == "STS_PREFIX_REFUSED"


def test_a_token_without_prefixes_gets_no_credentials() -> None:
    with pytest.raises(InvalidArgument) as err:
        session_policy([], [], NOT_AFTER)
    assert err.value.reason == "STS_NOTHING_GRANTED"


def test_a_policy_beyond_the_sts_limit_is_refused() -> None:
    many = [f"s3://data/datasets/{i:04d}/version/" for i in range(80)]
    with pytest.raises(InvalidArgument) as err:
        session_policy(many, [], NOT_AFTER)
    assert err.value.reason == "SESSION_POLICY_TOO_LARGE"


def test_duration_follows_the_token_within_sts_bounds() -> None:
    assert duration_seconds(10_000.0, 10_000.0 - 1800.5, 3600) == 1800
    assert duration_seconds(10_000.0, 0.0, 3600) == 3600  # the role's maximum
    assert duration_seconds(10_000.0, 10_000.0 - 300, 3600) == MIN_DURATION_SECONDS  # STS's floor
    for now in (10_000.0, 10_000.5, 20_000.0):
        with pytest.raises(FailedPrecondition):
            duration_seconds(10_000.0, now, 3600)
