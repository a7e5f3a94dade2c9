"""The wake-up queue chosen by ``Settings.queue.backend`` (PostgreSQL by default, SQS in
the cluster profile on AWS); either way the PostgreSQL state is the source of truth."""

from __future__ import annotations

import asyncpg

from trace_platform.adapters.queue.base import Queue
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.adapters.queue.sqs import SqsQueue
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition


async def open_queue(settings: Settings, pool: asyncpg.Pool) -> Queue:
    backend = settings.queue.backend
    if backend == "postgres":
        return PostgresQueue(pool)
    if backend == "sqs":
        return await SqsQueue.open(settings)
    raise FailedPrecondition("QUEUE_BACKEND_UNKNOWN", f"TRACE_QUEUE_BACKEND: unknown backend {backend!r}")
