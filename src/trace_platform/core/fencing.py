"""Attempt fencing: may a request carrying ``(task_id, attempt, lease_token)`` act?

Only the current attempt's lease holder may heartbeat, complete, emit events or
publish. A late reply from the current attempt is still accepted after the lease
reaper timed it out, as long as no newer attempt has started.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from trace_platform.core.errors import Aborted, NotFound
from trace_platform.core.models import TaskRef, TaskStatus

LEASE_EXPIRED = "lease_expired"


class Fence(Enum):
    LIVE = "live"  # running under this lease
    LATE = "late"  # this attempt's lease expired, no newer attempt yet
    FINISHED = "finished"  # this attempt already recorded an outcome


@dataclass(frozen=True)
class FenceState:
    status: TaskStatus
    attempt: int
    lease_token: str | None
    attempt_outcome: str | None = None


def check_fence(state: FenceState | None, ref: TaskRef) -> Fence:
    if state is None:
        raise NotFound("TASK_NOT_FOUND", "no such task")
    if ref.attempt != state.attempt:
        raise Aborted("STALE_ATTEMPT", "attempt is not the task's current attempt")
    if state.lease_token is None or ref.lease_token != state.lease_token:
        raise Aborted("LEASE_MISMATCH", "lease token does not hold the current lease")
    if state.status is TaskStatus.RUNNING:
        return Fence.LIVE
    if state.status is TaskStatus.FAILED and state.attempt_outcome == LEASE_EXPIRED:
        return Fence.LATE
    return Fence.FINISHED
