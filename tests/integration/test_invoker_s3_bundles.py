"""``s3://`` bundles (what a DAG resolves when the bundle store is S3), against moto's
server on loopback. The local invoker reads them from the store: in the cluster profile
it runs in its own process and shares no directory with the BundleService that published
them (only URLs under the store's prefix, bounded, the pinned digest checked on the copy).
The Lambda invoker sends the runner a pre-signed GET instead (the runner holds no store
credentials)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.moto_server import moto_server
from tests.udf_fixtures import invocation
from trace_platform.adapters.invoker.lambda_ import LambdaInvoker
from trace_platform.adapters.invoker.local import RemoteBundles, fetch_bundle
from trace_platform.adapters.objectstore.bundle_objects import S3BundleObjects
from trace_platform.core.bundle_manifest import BundleRejected
from trace_platform.core.config import ObjectStoreSettings, Settings, settings_from_env
from trace_platform.core.errors import InvalidArgument, PermissionDenied
from trace_platform.servers.invoker.app import remote_bundles

BUCKET = "bundles-test"
DATA = b"PK\x05\x06" + b"\0" * 18  # any bytes: verification happens after the fetch


FUNCTION = "trace-udf-runner"
CREDS = {"region_name": "us-east-1", "aws_access_key_id": "t", "aws_secret_access_key": "t"}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """S3 with two objects, and an echoing Lambda runner (moto without docker answers an
    invocation with its payload)."""
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint, **CREDS)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="bundles/org/a.zip", Body=DATA)
        s3.put_object(Bucket=BUCKET, Key="elsewhere/a.zip", Body=DATA)
        config = json.dumps({"lambda": {"use_docker": False}}).encode()
        post = urllib.request.Request(f"{endpoint}/moto-api/config", config, {"Content-Type": "application/json"})
        urllib.request.urlopen(post, timeout=5).close()
        role = boto3.client("iam", endpoint_url=endpoint, **CREDS).create_role(
            RoleName="udf-runner", AssumeRolePolicyDocument="{}"
        )["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as zf:
            zf.writestr("runner.py", "def handler(event, context):\n    return event\n")
        boto3.client("lambda", endpoint_url=endpoint, **CREDS).create_function(
            FunctionName=FUNCTION,
            Runtime="python3.11",
            Role=role,
            Handler="runner.handler",
            Code={"ZipFile": code.getvalue()},
        )
        yield endpoint


@pytest.fixture
def store(moto: str) -> RemoteBundles:
    settings = ObjectStoreSettings(s3_endpoint_url=moto, s3_access_key_id="t", s3_secret_access_key="t")
    return RemoteBundles(f"s3://{BUCKET}/bundles/", S3BundleObjects(settings))


def fetch(store: RemoteBundles, url: str, dest: Path, max_bytes: int = 1 << 20, sha: str = "") -> Path:
    return fetch_bundle(url, (), store, dest, max_bytes, sha)


def test_a_bundle_under_the_store_is_copied_and_its_digest_checked(store: RemoteBundles, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/bundles/org/a.zip"
    copied = fetch(store, url, tmp_path / "a.zip", sha=hashlib.sha256(DATA).hexdigest())
    assert copied.read_bytes() == DATA
    with pytest.raises(BundleRejected) as err:
        fetch(store, url, tmp_path / "b.zip", sha="00" * 32)
    assert err.value.reason == "BUNDLE_DIGEST_MISMATCH"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"s3://{BUCKET}/elsewhere/a.zip", "BUNDLE_URL_FORBIDDEN"),
        (f"s3://{BUCKET}/bundles/../elsewhere/a.zip", "BUNDLE_URL_FORBIDDEN"),
        (f"s3://{BUCKET}-other/bundles/org/a.zip", "BUNDLE_URL_FORBIDDEN"),
        (f"s3://{BUCKET}/bundles/org/missing.zip", "BUNDLE_NOT_FOUND"),
    ],
)
def test_a_bundle_outside_the_store_or_missing_is_refused(
    store: RemoteBundles, tmp_path: Path, url: str, reason: str
) -> None:
    with pytest.raises((BundleRejected, PermissionDenied)) as err:
        fetch(store, url, tmp_path / "x.zip")
    assert err.value.reason == reason  # type: ignore[union-attr]


def test_a_bundle_over_the_cap_is_refused(store: RemoteBundles, tmp_path: Path) -> None:
    with pytest.raises(BundleRejected) as err:
        fetch(store, f"s3://{BUCKET}/bundles/org/a.zip", tmp_path / "a.zip", max_bytes=len(DATA) - 1)
    assert err.value.reason == "BUNDLE_TOO_LARGE"


def test_without_an_s3_store_an_s3_url_is_unsupported(tmp_path: Path) -> None:
    assert remote_bundles(Settings(data_dir=tmp_path)) is None  # bundles in <data dir>/bundles
    with pytest.raises(Exception) as err:
        fetch_bundle(f"s3://{BUCKET}/bundles/org/a.zip", (tmp_path,), None, tmp_path / "a.zip", 1 << 20, "")
    assert getattr(err.value, "reason", None) == "BUNDLE_URL_UNSUPPORTED"


def lambda_invoker(moto: str, tmp_path: Path, bundles_uri: str) -> LambdaInvoker:
    env = {
        "TRACE_DATA_DIR": str(tmp_path),
        "TRACE_INVOKER_BACKEND": "lambda",
        "TRACE_INVOKER_LAMBDA_FUNCTION": FUNCTION,
        "TRACE_INVOKER_LAMBDA_ENDPOINT_URL": moto,
        "TRACE_S3_ENDPOINT_URL": moto,
        "TRACE_BUNDLES_URI": bundles_uri,
        "AWS_ACCESS_KEY_ID": "t",
        "AWS_SECRET_ACCESS_KEY": "t",
    }
    return LambdaInvoker.from_settings(settings_from_env(env))


async def test_the_lambda_runner_gets_a_presigned_get_of_an_s3_bundle(moto: str, tmp_path: Path) -> None:
    lam = lambda_invoker(moto, tmp_path, f"s3://{BUCKET}/bundles")
    try:
        res = await lam.invoke(invocation(f"s3://{BUCKET}/bundles/org/a.zip"))
        with pytest.raises(PermissionDenied) as err:
            await lam.invoke(invocation(f"s3://{BUCKET}/elsewhere/a.zip"))
        assert err.value.reason == "BUNDLE_URL_FORBIDDEN"
    finally:
        await lam.close()
    sent = json.loads(res.result_json)["bundle_url"]  # the echoed payload
    assert sent.startswith(moto) and "Signature=" in sent, sent
    # Fetchable with no credentials at all, as the runner would.
    assert await asyncio.to_thread(_get, sent) == DATA


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: bytes = resp.read()
        return data


async def test_the_lambda_invoker_refuses_an_s3_bundle_without_an_s3_store(moto: str, tmp_path: Path) -> None:
    lam = lambda_invoker(moto, tmp_path, "")  # bundles in <data dir>/bundles
    try:
        with pytest.raises(InvalidArgument) as err:
            await lam.invoke(invocation(f"s3://{BUCKET}/bundles/org/a.zip"))
    finally:
        await lam.close()
    assert err.value.reason == "BUNDLE_URL_UNSUPPORTED"
