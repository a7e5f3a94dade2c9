"""The trusted worker wrapper: wake-up -> claim -> run with heartbeats -> complete.

Safe under duplicate wake-ups: only a successful claim runs operator code, and a
message is acknowledged only once its task needs nothing more from this worker.

Capability tokens are short-lived: the heartbeat loop stores each renewed token in the
attempt's ``TaskCredential``, and every later call of the attempt (the operator's own,
and the completion) reads the token from there, so a task may run longer than a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trace_platform.adapters.queue.base import Message, Queue
from trace_platform.clients.batching import Coalescer
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import WorkerSettings
from trace_platform.core.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    TraceError,
    Unauthenticated,
    Unavailable,
)
from trace_platform.core.failures import is_permanent
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.servers.common.logs import task_log_context

log = logging.getLogger(__name__)
TASK_QUEUE = "tasks"


@dataclass
class TaskCredential:
    """The attempt's current capability token; heartbeats swap in renewed ones."""

    token: str


@dataclass(frozen=True)
class OperatorContext:
    task: common_pb2.TaskPayload
    config: dict[str, Any]
    ref: TaskRef
    credential: TaskCredential
    dispatcher: DispatcherClient

    @property
    def capability_token(self) -> str:
        """The current token: read it at each call, do not keep it (it is renewed)."""
        return self.credential.token


@dataclass
class OperatorResult:
    events: Sequence[common_pb2.DatasetEvent] = ()
    outputs: Sequence[common_pb2.TaskOutput] = ()
    datasets_published: Sequence[common_pb2.DatasetPublication] = ()


Operator = Callable[[OperatorContext], Awaitable[OperatorResult]]


COMPLETE_RETRIES = 12  # ~15 s of backoff in all
RETRY_VISIBILITY_SECONDS = 1.0


class LeaseLost(Exception):
    pass


@dataclass
class WorkerRuntime:
    queue: Queue
    dispatcher: DispatcherClient
    operators: Mapping[str, Operator]
    settings: WorkerSettings
    queue_name: str = TASK_QUEUE
    _slots: asyncio.Semaphore = field(init=False)
    _running: set[asyncio.Task[None]] = field(default_factory=set)
    _acks: Coalescer[Message, None] = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        # Slots finishing together share one DELETE instead of a transaction each.
        self._acks = Coalescer(self._ack_batch, max_batch=256, max_in_flight=1)

    async def _ack_batch(self, messages: list[Message]) -> list[TraceError | None]:
        try:
            await self.queue.ack(self.queue_name, messages)
        except Exception:
            # Unacked wake-ups reappear after their visibility timeout; the claim refuses
            # them (the task is no longer queued) and they are acked then.
            log.warning("ack failed; the wake-ups will be redelivered", exc_info=True)
        return [None] * len(messages)

    async def _ack(self, message: Message) -> None:
        await self._acks.submit(message)

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The queue unreachable (SQS, the pool): running tasks go on; receive again.
                log.warning("receive failed; retrying", exc_info=True)
                await asyncio.sleep(self.settings.poll_interval_seconds)

    async def run_once(self) -> int:
        """Receive up to a batch of wake-ups and start handling them; waits when idle."""
        free = max(1, min(self.settings.receive_batch, self.settings.concurrency - len(self._running)))
        messages = await self.queue.receive(self.queue_name, free, self.settings.visibility_seconds)
        if not messages:
            await self.queue.wait(self.queue_name, self.settings.poll_interval_seconds)
            return 0
        for message in messages:
            await self._slots.acquire()
            task = asyncio.create_task(self._guarded(message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(messages)

    async def drain(self) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._running):
            task.cancel()
        await self.drain()

    async def _guarded(self, message: Message) -> None:
        try:
            await self.handle(message)
        except TraceError as exc:
            # Dispatcher unreachable or similar: let the message reappear soon, not after the
            # full visibility timeout (a restarting Dispatcher would otherwise stall every task).
            log.warning("wake-up not handled", extra={"reason": exc.reason})
            with contextlib.suppress(Exception):
                await self.queue.change_visibility(self.queue_name, [message], RETRY_VISIBILITY_SECONDS)
        except Exception:
            log.exception("wake-up handling crashed")
        finally:
            self._slots.release()

    async def handle(self, message: Message) -> None:
        try:
            task_id = str(uuid.UUID(str(message.payload.get("task_id"))))
        except ValueError:
            log.warning("dropping malformed wake-up")
            await self._ack(message)
            return
        resp = await self.dispatcher.claim(task_id, self.settings.worker_id)
        if resp.WhichOneof("result") != "claimed":
            # Duplicate or late wake-up: somebody else has it, or it is done.
            await self._ack(message)
            return
        keeper = asyncio.create_task(self._keep_visible(message))
        try:
            await self._execute(resp.claimed)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        await self._ack(message)

    async def _keep_visible(self, message: Message) -> None:
        """While the attempt runs, keep its wake-up hidden: extended at a third of the
        visibility timeout, independent of the lease's heartbeat (whose interval follows
        the lease, and may be longer than the timeout). A failed extension is logged, not
        fatal: a wake-up that reappears meets a refused claim."""
        seconds = self.settings.visibility_seconds
        while True:
            await asyncio.sleep(max(0.05, seconds / 3))
            try:
                await self.queue.change_visibility(self.queue_name, [message], seconds)
            except Exception:
                log.warning("could not extend the wake-up's visibility", exc_info=True)

    async def _execute(self, claimed: dispatcher_pb2.Claimed) -> None:
        # Every line logged for this attempt (here, by the operator, in the tasks it starts)
        # names it: the context is copied into the asyncio tasks created inside.
        with task_log_context(claimed.task.task_id, claimed.attempt):
            await self._execute_attempt(claimed)

    async def _execute_attempt(self, claimed: dispatcher_pb2.Claimed) -> None:
        ref = TaskRef(claimed.task.task_id, claimed.attempt, claimed.lease_token)
        cap = TaskCredential(claimed.capability_token)
        ctx = OperatorContext(claimed.task, _config(claimed.task), ref, cap, self.dispatcher)
        operator = self.operators.get(claimed.task.operator)
        heartbeat = asyncio.create_task(self._heartbeat(ref, cap, claimed.lease_expires_at.ToDatetime(UTC)))
        work: asyncio.Future[OperatorResult] | None = None
        try:
            if operator is None:
                raise ValueError(f"unknown operator {claimed.task.operator!r}")
            work = asyncio.ensure_future(operator(ctx))
            done, _ = await asyncio.wait({work, heartbeat}, return_when=asyncio.FIRST_COMPLETED)
            if work not in done:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                raise LeaseLost()
            result = work.result()
        except LeaseLost:
            log.warning("lease lost, abandoning attempt", extra={"task_id": ref.task_id, "attempt": ref.attempt})
            return
        except asyncio.CancelledError:
            # The worker is stopping: the operator and its heartbeats stop with it (the lease
            # lapses and the reaper retries), never left running unowned.
            heartbeat.cancel()
            if work is not None:
                work.cancel()
            raise
        except Exception as exc:
            heartbeat.cancel()
            status = dispatcher_pb2.COMPLETION_STATUS_FAILED
            await self._finish(ref, cap, status, error=failure_message(exc), permanent=is_permanent(exc))
            return
        heartbeat.cancel()
        await self._finish(ref, cap, dispatcher_pb2.COMPLETION_STATUS_COMPLETED, result=result)

    async def _finish(
        self,
        ref: TaskRef,
        cap: TaskCredential,
        status: int,
        result: OperatorResult | None = None,
        error: str = "",
        permanent: bool = False,
    ) -> None:
        result = result or OperatorResult()
        # A Dispatcher restarting must not cost the work: retry while the lease may still hold.
        delay = 0.1
        for _ in range(COMPLETE_RETRIES):
            try:
                await self.dispatcher.complete(
                    ref,
                    cap.token,
                    status,
                    events=result.events,
                    outputs=result.outputs,
                    datasets_published=result.datasets_published,
                    error_message=error[:2000],
                    permanent=permanent,
                )
                return
            except (Aborted, FailedPrecondition, NotFound) as exc:
                # A newer attempt owns the task; our outcome must not be recorded.
                log.warning("completion refused", extra={"task_id": ref.task_id, "reason": exc.reason})
                return
            except (Unavailable, DeadlineExceeded):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        log.warning("completion not delivered; the lease reaper will retry the task", extra={"task_id": ref.task_id})

    async def _heartbeat(self, ref: TaskRef, cap: TaskCredential, expires: datetime) -> None:
        """Returns only when the lease is lost; cancelled when the work ends."""
        interval = max(0.05, (expires - datetime.now(UTC)).total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                answer = await self.dispatcher.renew(ref, cap.token)
            except (Aborted, FailedPrecondition, NotFound, Unauthenticated):
                return  # superseded, or the token lapsed: nothing this attempt does counts
            except TraceError:
                continue  # transient: try again; the lease outlives a few misses
            if answer.capability_token:
                cap.token = answer.capability_token


def failure_message(exc: Exception) -> str:
    """``<category>/<REASON>: message`` for platform errors (status views group by category)."""
    if isinstance(exc, TraceError):
        return f"{exc.metadata.get('category', 'task')}/{exc.reason}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _config(task: common_pb2.TaskPayload) -> dict[str, Any]:
    value = json.loads(task.config_json or "{}")
    return value if isinstance(value, dict) else {}
