"""STS AssumeRole for a task's scoped credentials against moto's server on loopback.

moto returns credentials but does not enforce session policies, so what is checked here
is the call (role, session name, duration bounded by the token) and that refused
prefixes never reach STS; the policy's content is proven in tests/unit/test_sts_policy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import boto3
import pytest

from tests.moto_server import moto_server
from trace_platform.adapters.aws.sts import MIN_DURATION_SECONDS, StsCredentials
from trace_platform.core.config import ObjectStoreSettings, Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.tokens import CapabilityClaims

TASK = "00000000-0000-0000-0000-000000000011"


@pytest.fixture(scope="module")
def moto_sts() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def role_arn(moto_sts: str) -> str:
    iam = boto3.client(
        "iam",
        endpoint_url=moto_sts,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    name = f"trace-task-{time.monotonic_ns()}"
    arn: str = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    return arn


def aws_settings(settings: Settings) -> Settings:
    store = ObjectStoreSettings(s3_access_key_id="testing", s3_secret_access_key="testing")
    return replace(settings, object_store=store)


def claims(left: float, reads: tuple[str, ...] = ("s3://data/datasets/d1/v1/",)) -> CapabilityClaims:
    return CapabilityClaims(
        org_id="org",
        task_id=TASK,
        attempt=2,
        s3_read_prefixes=reads,
        s3_write_prefixes=(f"s3://scratch/{TASK}/2/",),
        expires_at=time.time() + left,
    )


async def test_assume_role_for_a_task(settings: Settings, moto_sts: str, role_arn: str) -> None:
    sts = await StsCredentials.open(aws_settings(settings), role_arn, moto_sts)
    try:
        creds = await sts.for_task(claims(1800))
    finally:
        await sts.close()
    assert creds.access_key_id and creds.secret_access_key and creds.session_token
    assert creds.secret_access_key not in repr(creds) and creds.session_token not in repr(creds)
    left = (creds.expires_at - datetime.now(UTC)).total_seconds()
    assert 1790 <= left <= 1800  # the token's remaining lifetime, not STS's default hour


async def test_short_token_gets_the_sts_floor_and_expired_gets_nothing(
    settings: Settings, moto_sts: str, role_arn: str
) -> None:
    sts = await StsCredentials.open(aws_settings(settings), role_arn, moto_sts)
    try:
        creds = await sts.for_task(claims(120))
        left = (creds.expires_at - datetime.now(UTC)).total_seconds()
        assert MIN_DURATION_SECONDS - 10 <= left <= MIN_DURATION_SECONDS  # the policy's time condition bounds it
        with pytest.raises(FailedPrecondition):
            await sts.for_task(claims(-1))
        with pytest.raises(InvalidArgument) as err:
            await sts.for_task(claims(1800, reads=("s3://data/../other/",)))
        assert err.value.reason == "STS_PREFIX_REFUSED"
    finally:
        await sts.close()
