"""The SDK's synchronous form: the async clients, driven on a private event loop thread.

A gRPC aio channel belongs to the loop that made it, so the sync client owns one loop,
running in a daemon thread, and every call is submitted to it; an async iterator (a page
iterator) becomes a plain iterator that fetches the next page only when it is needed.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="trace-sdk", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        while True:
            try:
                yield self.run(_anext(items))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


async def _anext(items: AsyncIterator[T]) -> T:
    return await items.__anext__()


class SyncService:
    """One async service client seen synchronously: each coroutine method returns its
    result, each async-iterator method returns an iterator; other attributes pass through."""

    def __init__(self, target: object, runner: LoopThread) -> None:
        self._target = target
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or not callable(attr):
            return attr
        runner = self._runner

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.iscoroutine(result):
                return runner.run(result)
            if isinstance(result, AsyncIterator):
                return runner.iterate(result)
            return result

        return call

    def __dir__(self) -> list[str]:
        return [n for n in dir(self._target) if not n.startswith("_")]
