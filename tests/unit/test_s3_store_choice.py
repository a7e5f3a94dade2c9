"""The S3 store is built when settings ask for S3 in any way, including EKS with IRSA
(s3:// URIs and no keys or endpoint in the environment), and not otherwise."""

from __future__ import annotations

from pathlib import Path

from trace_platform.adapters.objectstore.factory import object_stores, s3_configured
from trace_platform.core.config import settings_from_env


def test_lite_has_no_s3_store(tmp_path: Path) -> None:
    settings = settings_from_env({"TRACE_DATA_DIR": str(tmp_path)})
    assert not s3_configured(settings)


def test_eks_with_irsa_gets_the_s3_store(tmp_path: Path) -> None:
    env = {
        "TRACE_DATA_DIR": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "TRACE_DATASETS_URI": "s3://example-trace-data/datasets",
        "TRACE_SCRATCH_URI": "s3://example-trace-scratch/scratch",
    }
    settings = settings_from_env(env)
    assert s3_configured(settings)
    assert object_stores(settings).for_uri("s3://example-trace-data/datasets/d/v1/part-0.parquet").scheme == "s3"


def test_an_endpoint_or_keys_still_choose_s3(tmp_path: Path) -> None:
    for env in ({"TRACE_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}, {"AWS_ACCESS_KEY_ID": "k"}):
        assert s3_configured(settings_from_env({"TRACE_DATA_DIR": str(tmp_path), **env}))


def test_the_query_egress_check_sees_the_irsa_store(tmp_path: Path) -> None:
    """The store built without keys is checked too: it talks to AWS's regional endpoint."""
    import pytest

    from trace_platform.core.errors import FailedPrecondition
    from trace_platform.servers.query.egress import check_query_egress, storage_endpoints

    env = {"TRACE_DATA_DIR": str(tmp_path), "TRACE_DATASETS_URI": "s3://example-trace-data/datasets"}
    settings = settings_from_env({**env, "AWS_REGION": "eu-west-1"})
    assert storage_endpoints(settings) == [("AWS_REGION", "https://s3.eu-west-1.amazonaws.com")]
    with pytest.raises(FailedPrecondition):
        check_query_egress(settings_from_env({**env, "TRACE_QUERY_EGRESS_ALLOW": "10.0.0.0/8"}))
