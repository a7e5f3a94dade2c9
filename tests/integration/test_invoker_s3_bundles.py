"""The local invoker reads ``s3://`` bundles from the bundle store (moto's S3 on loopback):
in the cluster profile the invoker runs in its own process and shares no directory with
the BundleService that published them. Only URLs under the store's prefix, bounded, and
the pinned digest checked on the copy."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.moto_server import moto_server
from trace_platform.adapters.invoker.local import RemoteBundles, fetch_bundle
from trace_platform.adapters.objectstore.bundle_objects import S3BundleObjects
from trace_platform.core.bundle_manifest import BundleRejected
from trace_platform.core.config import ObjectStoreSettings, Settings
from trace_platform.core.errors import PermissionDenied
from trace_platform.servers.invoker.app import remote_bundles

BUCKET = "bundles-test"
DATA = b"PK\x05\x06" + b"\0" * 18  # any bytes: verification happens after the fetch


@pytest.fixture(scope="module")
def store() -> Iterator[RemoteBundles]:
    with moto_server() as endpoint:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="bundles/org/a.zip", Body=DATA)
        s3.put_object(Bucket=BUCKET, Key="elsewhere/a.zip", Body=DATA)
        settings = ObjectStoreSettings(s3_endpoint_url=endpoint, s3_access_key_id="t", s3_secret_access_key="t")
        yield RemoteBundles(f"s3://{BUCKET}/bundles/", S3BundleObjects(settings))


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
