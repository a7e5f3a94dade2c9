"""Scoped AWS credentials for one task attempt: STS AssumeRole with a session policy
built from the capability token's S3 prefixes.

The session policy is the whole grant (AWS intersects it with the role's own policy):
``s3:GetObject`` under each read prefix, ``s3:PutObject`` under each write prefix,
``s3:ListBucket`` on their buckets only for keys under those prefixes, and nothing
else. Every statement also stops at the token's expiry (``aws:CurrentTime``), because
STS issues credentials for at least 900 s and a token may have less left.

A prefix that is not a plain ``s3://bucket/key/`` (traversal, empty segments, a bucket
root, IAM wildcards or policy variables, anything outside a conservative character set)
is refused before STS is called: fail closed, never widen.

Natural caller: none yet (operators write through the platform's own store and
credentials); ``StsCredentials.for_task`` is exposed for the UDF runners that will need
credentials of their own.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trace_platform.adapters.aws.clients import open_client
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from trace_platform.core.storage_paths import normalize_prefix
from trace_platform.core.tokens import CapabilityClaims

MIN_DURATION_SECONDS = 900  # STS's floor for DurationSeconds
MAX_PACKED_POLICY_CHARS = 2048  # STS's limit for the Policy parameter
PREFIX_REFUSED = "STS_PREFIX_REFUSED"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Keys may hold more, but nothing here may mean something to IAM: no ``*``, ``?``
# (wildcards), ``$``, ``{``, ``}`` (policy variables), quotes or spaces.
_KEY = re.compile(r"^[A-Za-z0-9._=+,@:/-]+$")


def _split(prefix: str) -> tuple[str, str]:
    """``(bucket, key/)`` of a plain S3 prefix, or InvalidArgument."""
    normal = normalize_prefix(prefix)
    if normal is None or not normal.startswith("s3://") or normal != prefix.rstrip("/") + "/":
        raise InvalidArgument(PREFIX_REFUSED, "not a plain s3://bucket/key/ prefix")
    bucket, _, key = normal.removeprefix("s3://").partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidArgument(PREFIX_REFUSED, "not a valid bucket name")
    if not key or key == "/" or not _KEY.match(key):
        raise InvalidArgument(PREFIX_REFUSED, "the key prefix is empty or holds characters IAM interprets")
    return bucket, key


def session_policy(
    read_prefixes: Iterable[str], write_prefixes: Iterable[str], not_after: float, partition: str = "aws"
) -> str:
    """The IAM session policy (compact JSON) granting exactly these prefixes until
    ``not_after`` (Unix seconds). Deterministic: same grant, same text."""
    reads = sorted({_split(p) for p in read_prefixes})
    writes = sorted({_split(p) for p in write_prefixes})
    if not reads and not writes:
        raise InvalidArgument("STS_NOTHING_GRANTED", "the token grants no S3 prefix")
    until = {"DateLessThan": {"aws:CurrentTime": datetime.fromtimestamp(not_after, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
    statements: list[dict[str, Any]] = []
    for sid, action, grants in (("Read", "s3:GetObject", reads), ("Write", "s3:PutObject", writes)):
        if grants:
            resources = [f"arn:{partition}:s3:::{bucket}/{key}*" for bucket, key in grants]
            statements.append(
                {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resources, "Condition": until}
            )
    for i, bucket in enumerate(sorted({b for b, _ in reads + writes})):
        keys = sorted({k for b, k in reads + writes if b == bucket})
        condition = {"StringLike": {"s3:prefix": [f"{k}*" for k in keys]}, **until}
        statements.append(
            {
                "Sid": f"List{i}",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:{partition}:s3:::{bucket}",
                "Condition": condition,
            }
        )
    text = json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))
    if len(text) > MAX_PACKED_POLICY_CHARS:
        raise InvalidArgument("SESSION_POLICY_TOO_LARGE", f"the session policy exceeds {MAX_PACKED_POLICY_CHARS} chars")
    return text


def duration_seconds(expires_at: float, now: float, role_max_seconds: int = 3600) -> int:
    """The token's remaining lifetime, within STS's bounds (900 s up to the role's maximum);
    an expired token gets nothing. Below 900 s the policy's time condition is the bound."""
    left = math.floor(expires_at - now)
    if left <= 0:
        raise FailedPrecondition("TOKEN_EXPIRED", "the capability token has expired")
    return max(MIN_DURATION_SECONDS, min(left, role_max_seconds))


@dataclass(frozen=True)
class ScopedCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expires_at: datetime


class StsCredentials:
    """AssumeRole on the task-credentials role, narrowed per task by the session policy."""

    def __init__(self, client: Any, role_arn: str, role_max_seconds: int = 3600) -> None:
        self._client = client
        self._role_arn = role_arn
        self._role_max = role_max_seconds
        self._stack: contextlib.AsyncExitStack | None = None

    @staticmethod
    async def open(
        settings: Settings, role_arn: str, endpoint_url: str | None = None, role_max_seconds: int = 3600
    ) -> StsCredentials:
        stack = contextlib.AsyncExitStack()
        creds = StsCredentials(
            await open_client(stack, "sts", settings.object_store, endpoint_url), role_arn, role_max_seconds
        )
        creds._stack = stack
        return creds

    async def for_task(self, claims: CapabilityClaims, now: float | None = None) -> ScopedCredentials:
        now = time.time() if now is None else now
        policy = session_policy(claims.s3_read_prefixes, claims.s3_write_prefixes, claims.expires_at)
        duration = duration_seconds(claims.expires_at, now, self._role_max)
        try:
            resp = await self._client.assume_role(
                RoleArn=self._role_arn,
                # CloudTrail names the attempt: 64 chars at most, [\w+=,.@-].
                RoleSessionName=f"trace-{claims.task_id}-{claims.attempt}"[:64],
                Policy=policy,
                DurationSeconds=duration,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "") or "error"
            raise Unavailable("STS_ASSUME_ROLE_FAILED", f"sts assume-role failed ({code})") from None
        except BotoCoreError:
            raise Unavailable("STS_UNREACHABLE", "the STS API could not be reached") from None
        c = resp["Credentials"]
        return ScopedCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], c["Expiration"])

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
