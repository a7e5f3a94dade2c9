"""Rules between settings that no single field can state, checked at start."""

from __future__ import annotations

import pytest

from trace_platform.core.config import SettingsError, settings_from_env


def test_token_ttl_must_outlive_a_udf() -> None:
    # A UDF keeps the token it started with: a TTL shorter than twice the UDF timeout
    # would let a long UDF's task calls fail with an expired token.
    with pytest.raises(SettingsError) as err:
        settings_from_env({"TRACE_TOKEN_TTL_SECONDS": "100", "TRACE_INVOKER_TIMEOUT_SECONDS": "60"})
    assert err.value.variable == "TRACE_TOKEN_TTL_SECONDS"
    assert "TRACE_INVOKER_TIMEOUT_SECONDS" in err.value.problem


def test_token_ttl_twice_the_udf_timeout_is_accepted() -> None:
    got = settings_from_env({"TRACE_TOKEN_TTL_SECONDS": "120", "TRACE_INVOKER_TIMEOUT_SECONDS": "60"})
    assert got.tokens.ttl_seconds == 120
    assert got.invoker.limits.timeout_seconds == 60.0
