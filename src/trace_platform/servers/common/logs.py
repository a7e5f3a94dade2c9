"""Structured JSON logs on stderr. Callers pass facts in ``extra``; never SQL or secrets.

Every line logged while a task attempt runs (the worker runtime enters
``task_log_context``; asyncio copies the context into the tasks it starts) carries that
attempt's ``task_id`` and ``attempt``, whoever logs it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_TASK: ContextVar[tuple[str, int] | None] = ContextVar("trace_task_attempt", default=None)


@contextmanager
def task_log_context(task_id: str, attempt: int) -> Iterator[None]:
    """Within it (and in asyncio tasks created within it) log lines name the attempt."""
    token = _TASK.set((task_id, attempt))
    try:
        yield
    finally:
        _TASK.reset(token)


def current_task_attempt() -> tuple[str, int] | None:
    return _TASK.get()

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        task = _TASK.get()
        if task is not None:
            entry["task_id"], entry["attempt"] = task
        # A caller's own extra wins (it may name another task, e.g. the Dispatcher's reaper).
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
