"""The one small interface every invoker implements, and its request/result types.

``Invocation`` is the reference's invocation payload (task id, attempt, lease token and
expiry, capability token, bundle location) plus the work (operator, config, inputs).
``event()`` is what the UDF reads on stdin; the capability token is not in it (it goes
into the sandbox environment, or into the Lambda payload for the platform runner).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from trace_platform.core.errors import FailedPrecondition, TraceError, Unavailable

# Why a UDF run did not produce a result. Empty: success.
UDF_OK = ""
UDF_TIMEOUT = "UDF_TIMEOUT"
UDF_EXIT_NONZERO = "UDF_EXIT_NONZERO"
UDF_KILLED = "UDF_KILLED"
UDF_RESULT_INVALID = "UDF_RESULT_INVALID"
UDF_RESULT_TOO_LARGE = "UDF_RESULT_TOO_LARGE"
UDF_FUNCTION_ERROR = "UDF_FUNCTION_ERROR"
# A run that timed out or was killed may pass on another attempt; every other reason is
# the run's own answer (core/failures says which of those are final).
_PASSING = frozenset({UDF_TIMEOUT, UDF_KILLED})


def no_result_error(reason: str) -> TraceError:
    """What an operator raises when an invocation gave no result, for ``reason``."""
    kind = Unavailable if reason in _PASSING else FailedPrecondition
    return kind(reason, "the UDF produced no result", category="udf")


@dataclass(frozen=True)
class Invocation:
    task_id: str
    attempt: int
    lease_token: str
    lease_expires_at: datetime
    capability_token: str = field(repr=False)
    bundle_url: str
    bundle_sha256: str = ""
    operator: str = "udf"
    config: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    def event(self, deadline_unix: float) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "lease_token": self.lease_token,
            "lease_expires_at": self.lease_expires_at.isoformat(),
            "deadline_unix": round(deadline_unix, 3),
            "operator": self.operator,
            "config": self.config,
            "inputs": self.inputs,
        }


@dataclass(frozen=True)
class InvocationResult:
    exit_code: int
    result_json: str
    stderr_tail: str
    timed_out: bool
    error_reason: str = UDF_OK
    runtime: str = ""
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error_reason == UDF_OK


class RuntimeInvoker(Protocol):
    async def invoke(self, invocation: Invocation) -> InvocationResult: ...

    async def close(self) -> None: ...


class LazyInvoker:
    """An invoker built on first use, once: building the local one probes the machine's
    sandboxing (bwrap, cgroups), which a worker that never runs a UDF should not pay."""

    def __init__(self, make: Callable[[], RuntimeInvoker]) -> None:
        self._make = make
        self._built: RuntimeInvoker | None = None

    async def get(self) -> RuntimeInvoker:
        if self._built is None:
            self._built = await asyncio.to_thread(self._make)
        return self._built
