"""Which failures another attempt would only repeat.

A failed attempt is retried with backoff (``dispatcher.default_max_attempts``) because
most failures pass: a node that lagged, a Dispatcher restarting, a sandbox killed under
memory pressure. Some cannot pass, because they follow from what the task itself pins:
its config, its bundle's bytes, the UDF's answer to the same inputs. Retrying those
spends attempts and delays the failure the user has to see. The worker reports them as
permanent and the Dispatcher schedules no retry, as after a task's last attempt.
Reason codes decide, not exception classes, because the error may have crossed a
process (the RuntimeInvoker's gRPC boundary) on its way to the worker.
"""

from __future__ import annotations

from trace_platform.core.errors import ErrorKind, TraceError

# A bundle that is not there may appear (an upload in flight, an eventually consistent
# store), and a signing key may be trusted by a later deployment; every other bundle
# rejection (its URL, archive, manifest, signature) is about what the task pins.
_PASSING_BUNDLE_REASONS = frozenset({"BUNDLE_NOT_FOUND", "BUNDLE_KEY_UNTRUSTED"})

PERMANENT_REASONS = frozenset(
    {
        "UDF_RESULT_INVALID",  # the answer broke the result contract (core/udf_output)
        "UDF_RESULT_TOO_LARGE",
        "UDF_CONFIG",  # a task's config never changes after creation
        "ALERT_EVALUATE_CONFIG",
    }
)

# Only refusals are final: the same reason under UNAVAILABLE or INTERNAL is a passing fault.
_FINAL_KINDS = frozenset({ErrorKind.FAILED_PRECONDITION, ErrorKind.INVALID_ARGUMENT, ErrorKind.PERMISSION_DENIED})


def is_permanent(exc: BaseException) -> bool:
    """True when another attempt of the same task would fail the same way."""
    if not isinstance(exc, TraceError) or exc.kind not in _FINAL_KINDS:
        return False
    reason = exc.reason
    if reason.startswith("BUNDLE_"):
        return reason not in _PASSING_BUNDLE_REASONS
    return reason in PERMANENT_REASONS
