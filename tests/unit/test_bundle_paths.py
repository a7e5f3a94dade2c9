"""Where uploaded bundles live: named by org and content, staged apart, and the Lite
invoker's default bundle root follows the BundleService's store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from trace_platform.core.bundle_paths import final_uri, staging_uri
from trace_platform.core.config import BundleSettings, Settings, settings_from_env
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.storage_paths import is_under
from trace_platform.servers.invoker.app import default_bundle_roots

ORG = str(uuid.uuid4())
SHA = "ab" * 32


def test_final_objects_are_named_by_org_and_sha256_and_staging_is_apart() -> None:
    root = "s3://bucket/trace/bundles/"
    bid = str(uuid.uuid4())
    assert final_uri(root, ORG, SHA) == f"s3://bucket/trace/bundles/{ORG}/{SHA}.zip"
    staged = staging_uri(root, ORG, bid)
    assert staged == f"s3://bucket/trace/bundles-staging/{ORG}/{bid}.zip"
    assert not is_under(staged, root)  # never under the root an invoker may fetch from
    assert final_uri("file:///d/bundles", ORG.upper(), SHA) == f"file:///d/bundles/{ORG}/{SHA}.zip"


@pytest.mark.parametrize("sha", ["AB" * 32, "ab" * 31, "../" + "a" * 61, ""])
def test_a_bad_digest_names_no_object(sha: str) -> None:
    with pytest.raises(InvalidArgument):
        final_uri("file:///d/bundles", ORG, sha)


@pytest.mark.parametrize("org", ["../x", "", "not-a-uuid"])
def test_a_bad_org_names_no_object(org: str) -> None:
    with pytest.raises(ValueError):
        final_uri("file:///d/bundles", org, SHA)


def test_a_bad_root_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        final_uri("http://x/bundles", ORG, SHA)


def test_the_invoker_root_follows_the_bundle_store(tmp_path: Path) -> None:
    assert default_bundle_roots(Settings(data_dir=tmp_path)) == (tmp_path / "bundles",)
    moved = Settings(data_dir=tmp_path, bundles=BundleSettings(uri="file:///srv/trace/bundles"))
    assert default_bundle_roots(moved) == (Path("/srv/trace/bundles"),)


def test_bundle_settings_from_the_environment() -> None:
    s = settings_from_env(
        {
            "TRACE_BUNDLES_URI": "s3://b/p",
            "TRACE_BUNDLES_MAX_UPLOAD_BYTES": "1000",
            "TRACE_BUNDLES_UPLOAD_URL_SECONDS": "60",
            "TRACE_BUNDLES_MAX_CONCURRENT": "2",
            "TRACE_BUNDLES_IDLE_SECONDS": "5",
        }
    ).bundles
    assert s == BundleSettings(
        uri="s3://b/p", max_upload_bytes=1000, upload_url_seconds=60, max_concurrent=2, idle_seconds=5.0
    )
