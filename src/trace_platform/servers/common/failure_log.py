"""Operator-facing failure lines: one per failure, at WARNING or above, with ids and a
stable reason code.

Invariant: every failure an operator must see (a failed task attempt, a task or a
chain_sync range that failed for good, a dead-lettered batch, a delivery that gave up)
is logged exactly once, by the component that decided it, through these functions. The
lines carry ids, reason codes and categories only: never the free-text error message,
which may quote user SQL or a provider URL.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime
from typing import Any

from trace_platform.core import cryo_task
from trace_platform.core.errors import TraceError

log = logging.getLogger("trace_platform.failures")

# What WorkerRuntime.failure_message writes: "<category>/<REASON>: message", or
# "<ExceptionType>: message" for an error that is not a platform error.
_PLATFORM_ERROR = re.compile(r"^(?P<category>[a-z][a-z0-9_]{0,31})/(?P<reason>[A-Z][A-Z0-9_]{0,63}):")
_EXCEPTION_TYPE = re.compile(r"^(?P<type>[A-Za-z_][A-Za-z0-9_.]{0,79}):")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def task_failure_reason(error_message: str) -> tuple[str, str]:
    """(category, reason code) of a task attempt's recorded error message."""
    m = _PLATFORM_ERROR.match(error_message)
    if m:
        return m["category"], m["reason"]
    if error_message == "lease expired":  # written by the lease reaper
        return "lease", "LEASE_EXPIRED"
    m = _EXCEPTION_TYPE.match(error_message)
    if m:
        return "task", "OPERATOR_" + reason_code(m["type"].rsplit(".", 1)[-1])
    return "task", "TASK_FAILED"


def reason_code(text: str) -> str:
    """A stable UPPER_SNAKE code from a short label: 'HTTP 503' -> HTTP_503,
    'ClientConnectorError' -> CLIENT_CONNECTOR_ERROR, 'timeout' -> TIMEOUT."""
    snake = _CAMEL.sub("_", text.strip())
    code = re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").upper()
    return code[:64] or "UNKNOWN"


def _range_fields(operator: str, config_json: str | None) -> dict[str, Any]:
    """The chain_sync range a cryo_ingest task stands for (empty for other tasks)."""
    if operator != cryo_task.OPERATOR or not config_json:
        return {}
    try:
        config = cryo_task.CryoTaskConfig.from_dict(json.loads(config_json))
    except (TraceError, ValueError, TypeError):
        return {}
    return {
        "sync": config.sync,
        "datasets": ",".join(o.dataset_key for o in config.outputs),
        "range_start": config.range_start,
        "range_end": config.range_end,
    }


def task_attempt_failed(
    task_id: str,
    attempt: int,
    operator: str,
    error_message: str,
    next_retry_at: datetime | None,
    config_json: str | None = None,
) -> None:
    """One line per failed attempt: WARNING while a retry is scheduled, ERROR when the task
    (for cryo_ingest: its chain_sync range) failed for good."""
    category, reason = task_failure_reason(error_message)
    fields: dict[str, Any] = {
        "task_id": task_id,
        "attempt": attempt,
        "operator": operator,
        "reason": reason,
        "category": category,
        **_range_fields(operator, config_json),
    }
    if next_retry_at is not None:
        log.warning(
            "task attempt failed; retry scheduled", extra={**fields, "next_retry_at": next_retry_at.isoformat()}
        )
    elif "range_start" in fields:
        log.error("chain_sync range failed for good", extra=fields)
    else:
        log.error("task failed for good", extra=fields)


def batch_dead_lettered(publish_id: str, task_id: str, reason: str, row_number: int) -> None:
    log.error(
        "batch dead-lettered",
        extra={"publish_id": publish_id, "task_id": task_id, "reason": reason, "row_number": row_number},
    )


def delivery_gave_up(delivery_id: str, attempt: int, channel: str, reason: str, **fields: Any) -> None:
    log.error(
        "delivery gave up",
        extra={"delivery_id": delivery_id, "attempt": attempt, "channel": channel, "reason": reason, **fields},
    )
