"""The Query Service's start-up egress check (servers/query/egress.py) and its setting:
an endpoint outside TRACE_QUERY_EGRESS_ALLOW stops the start with QUERY_EGRESS_NOT_ALLOWED
naming the variable; names are matched as names, never resolved; empty means no check.
The process-level refusal (`trace serve query` exits 2) is in tests/deploy/test_s1_netns."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from trace_platform.core.config import ObjectStoreSettings, QuerySettings, Settings, SettingsError, settings_from_env
from trace_platform.core.errors import ErrorKind, FailedPrecondition
from trace_platform.servers.query.egress import check_query_egress


def settings(allow: tuple[str, ...], endpoint: str | None, key: str | None = "k") -> Settings:
    return Settings(
        query=QuerySettings(egress_allow=allow),
        object_store=ObjectStoreSettings(s3_endpoint_url=endpoint, s3_access_key_id=key, s3_region="eu-west-1"),
    )


@pytest.mark.parametrize(
    ("allow", "endpoint"),
    [
        (("10.199.0.0/30",), "http://10.199.0.1:9000"),
        (("10.0.0.0/8", "minio.trace.svc"), "http://MINIO.trace.svc:9000"),
        ((".amazonaws.com",), None),  # AWS's regional endpoint, by its name
        (("s3.eu-west-1.amazonaws.com",), "https://s3.eu-west-1.amazonaws.com"),
        (("fd00::/8",), "http://[fd00::5]:9000"),
        ((), "http://203.0.113.9"),  # no allowlist: Lite, no check
    ],
)
def test_endpoints_inside_the_allowlist_start(allow: tuple[str, ...], endpoint: str | None) -> None:
    check_query_egress(settings(allow, endpoint))


def test_no_s3_store_has_nothing_to_check() -> None:
    check_query_egress(settings(("10.0.0.0/8",), None, key=None))


@pytest.mark.parametrize(
    ("allow", "endpoint", "variable"),
    [
        (("10.199.0.0/30",), "http://10.199.0.9:9000", "TRACE_S3_ENDPOINT_URL"),
        (("10.199.0.0/30",), "http://minio.trace.svc:9000", "TRACE_S3_ENDPOINT_URL"),  # a name is not resolved
        (("minio.trace.svc",), "http://10.199.0.1:9000", "TRACE_S3_ENDPOINT_URL"),  # nor an address named
        (("trace.svc",), "http://evil-trace.svc", "TRACE_S3_ENDPOINT_URL"),  # not a suffix entry
        ((".trace.svc",), "http://trace.svc.evil.example", "TRACE_S3_ENDPOINT_URL"),
        (("10.0.0.0/8",), None, "AWS_REGION"),  # an S3 store without endpoint reaches AWS
        (("10.0.0.0/8",), "not a url", "TRACE_S3_ENDPOINT_URL"),
        (("10.0.0.0/8",), "http://[::ffff:10.0.0.1", "TRACE_S3_ENDPOINT_URL"),
    ],
)
def test_endpoints_outside_are_refused_naming_the_variable(
    allow: tuple[str, ...], endpoint: str | None, variable: str
) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        check_query_egress(settings(allow, endpoint))
    assert exc.value.reason == "QUERY_EGRESS_NOT_ALLOWED" and exc.value.kind is ErrorKind.FAILED_PRECONDITION
    assert variable in exc.value.message and "TRACE_QUERY_EGRESS_ALLOW" in exc.value.message


def test_the_setting_is_read_and_checked() -> None:
    env = {"TRACE_QUERY_EGRESS_ALLOW": " 10.1.0.0/16, minio.trace.svc ,.amazonaws.com"}
    assert settings_from_env(env).query.egress_allow == ("10.1.0.0/16", "minio.trace.svc", ".amazonaws.com")
    assert settings_from_env({}).query.egress_allow == ()
    with pytest.raises(SettingsError) as exc:
        settings_from_env({"TRACE_QUERY_EGRESS_ALLOW": "10.1.0.0/16,http://x"})
    assert exc.value.variable == "TRACE_QUERY_EGRESS_ALLOW"


def test_the_check_runs_where_the_query_server_is_built() -> None:
    from trace_platform.servers.query.app import build_query_server

    bad = replace(settings(("10.199.0.0/30",), "http://10.199.0.9:9000"), data_dir=Path("/nonexistent"))
    # Refused before anything is built (no pool is needed to get there).
    with pytest.raises(FailedPrecondition, match="QUERY_EGRESS_NOT_ALLOWED"):
        build_query_server(None, bad, None)  # type: ignore[arg-type]
