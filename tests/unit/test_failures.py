"""Which failures the worker reports as permanent (no retry) and which it leaves to retry."""

from __future__ import annotations

import pytest

from trace_platform.adapters.invoker.base import UDF_KILLED, UDF_RESULT_INVALID, UDF_TIMEOUT, no_result_error
from trace_platform.core.bundle_manifest import BundleRejected
from trace_platform.core.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PermissionDenied,
    TraceError,
    Unavailable,
)
from trace_platform.core.failures import is_permanent
from trace_platform.core.udf_output import udf_table


@pytest.mark.parametrize(
    "exc",
    [
        FailedPrecondition("UDF_RESULT_INVALID", "bad"),
        FailedPrecondition("UDF_RESULT_TOO_LARGE", "big"),
        InvalidArgument("UDF_CONFIG", "config"),
        InvalidArgument("ALERT_EVALUATE_CONFIG", "config"),
        BundleRejected("BUNDLE_DIGEST_MISMATCH", "digest"),
        BundleRejected("BUNDLE_SIGNATURE_INVALID", "signature"),
        InvalidArgument("BUNDLE_URL_UNSUPPORTED", "url"),
        PermissionDenied("BUNDLE_URL_FORBIDDEN", "url"),
    ],
)
def test_what_the_task_pins_fails_for_good(exc: TraceError) -> None:
    assert is_permanent(exc)


@pytest.mark.parametrize(
    "exc",
    [
        Unavailable("UDF_RESULT_INVALID", "same reason, passing kind"),
        Internal("UDF_RESULT_INVALID", "same reason, passing kind"),
        FailedPrecondition("UDF_FUNCTION_ERROR", "the function raised: may be a query that failed"),
        FailedPrecondition("UDF_EXIT_NONZERO", "exit"),
        BundleRejected("BUNDLE_NOT_FOUND", "an upload may be in flight"),
        BundleRejected("BUNDLE_KEY_UNTRUSTED", "a later deployment may trust it"),
        FailedPrecondition("LEASE_EXPIRED", "lease"),
        FailedPrecondition("RPC_POOL_UNKNOWN", "pool"),
        ValueError("unknown operator 'x'"),
        RuntimeError("boom"),
    ],
)
def test_everything_else_is_retried(exc: Exception) -> None:
    assert not is_permanent(exc)


def test_an_invocation_without_result_is_final_only_for_a_contract_breaking_answer() -> None:
    for reason in (UDF_TIMEOUT, UDF_KILLED):
        err = no_result_error(reason)
        assert isinstance(err, Unavailable) and not is_permanent(err) and err.reason == reason
    err = no_result_error(UDF_RESULT_INVALID)
    assert isinstance(err, FailedPrecondition) and is_permanent(err)
    assert err.metadata["category"] == "udf"


def test_a_result_that_breaks_the_contract_raises_a_permanent_error() -> None:
    with pytest.raises(TraceError) as exc:
        udf_table("not json")
    assert is_permanent(exc.value)
