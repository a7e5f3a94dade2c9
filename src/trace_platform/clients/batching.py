"""A Dispatcher client that coalesces concurrent calls into the batch RPCs.

``claim``, ``heartbeat`` and ``complete`` keep their single-call signatures, results
and errors; calls made while a batch of the same kind is in flight (or in the same
event-loop turn) travel together as one ClaimTasks / HeartbeatTasks / CompleteTasks
RPC. A lone call goes out at once, so an idle worker sees no added latency; a busy
one pays one gRPC call per batch instead of one per task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc

from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.errors import call, from_item_error
from trace_platform.core.errors import TraceError
from trace_platform.gen.trace.v1 import dispatcher_pb2

pb = dispatcher_pb2
Item = TypeVar("Item")
Ok = TypeVar("Ok")


Send = Callable[[list[Item]], Awaitable[list[Ok | TraceError]]]


def _outcome(result: Any) -> Any:
    """A batch result item (ClaimTaskResult, HeartbeatResult, CompleteResult): its ``ok``
    message, or the error its single call would have raised."""
    if result.WhichOneof("result") == "ok":
        return result.ok
    err = result.error
    return from_item_error(err.code, err.reason, err.message)


class Coalescer(Generic[Item, Ok]):
    """Coalesces concurrent ``submit`` calls into batches for ``send`` (one result per item)."""

    def __init__(self, send: Send[Item, Ok], max_batch: int, max_in_flight: int) -> None:
        self._send = send
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[Item, asyncio.Future[Ok]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def submit(self, item: Item) -> Ok:
        future: asyncio.Future[Ok] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if not self._scheduled and self._pending and len(self._in_flight) < self._max_in_flight:
            # After the callers already woken in this loop turn have submitted theirs.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._in_flight) < self._max_in_flight:
            live = [(item, f) for item, f in self._pending if not f.done()]  # a cancelled caller sends nothing
            batch, self._pending = live[: self._max_batch], live[self._max_batch :]
            if not batch:
                return
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._kick()

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Ok]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except TraceError as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(type(exc)(exc.reason, exc.message))
            return
        except BaseException:
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, TraceError):
                future.set_exception(result)
            else:
                future.set_result(result)


class BatchingDispatcherClient(DispatcherClient):
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        worker_token: str | None = None,
        admin_token: str | None = None,
        max_batch: int = 64,
        max_in_flight: int = 1,
    ) -> None:
        super().__init__(channel, worker_token=worker_token, admin_token=admin_token)
        self._claims: Coalescer[pb.ClaimTaskRequest, pb.ClaimTaskResponse] = Coalescer(
            self._claim_batch, max_batch, max_in_flight
        )
        self._heartbeats: Coalescer[pb.HeartbeatItem, pb.HeartbeatResponse] = Coalescer(
            self._heartbeat_batch, max_batch, max_in_flight
        )
        self._completions: Coalescer[pb.CompleteItem, pb.CompleteTaskResponse] = Coalescer(
            self._complete_batch, max_batch, max_in_flight
        )

    async def _claim_batch(self, items: list[pb.ClaimTaskRequest]) -> list[pb.ClaimTaskResponse | TraceError]:
        resp = await call(self._stub.ClaimTasks(pb.ClaimTasksRequest(claims=items), metadata=self._worker_md))
        return [_outcome(r) for r in resp.results]

    async def _heartbeat_batch(self, items: list[pb.HeartbeatItem]) -> list[pb.HeartbeatResponse | TraceError]:
        resp = await call(self._stub.HeartbeatTasks(pb.HeartbeatTasksRequest(items=items)))
        return [_outcome(r) for r in resp.results]

    async def _complete_batch(self, items: list[pb.CompleteItem]) -> list[pb.CompleteTaskResponse | TraceError]:
        resp = await call(self._stub.CompleteTasks(pb.CompleteTasksRequest(items=items)))
        return [_outcome(r) for r in resp.results]

    async def _send_claim(self, req: pb.ClaimTaskRequest) -> pb.ClaimTaskResponse:
        return await self._claims.submit(req)

    async def _send_heartbeat(self, req: pb.HeartbeatRequest, capability: str) -> pb.HeartbeatResponse:
        return await self._heartbeats.submit(pb.HeartbeatItem(request=req, capability_token=capability))

    async def _send_complete(self, req: pb.CompleteTaskRequest, capability: str) -> pb.CompleteTaskResponse:
        return await self._completions.submit(pb.CompleteItem(request=req, capability_token=capability))
