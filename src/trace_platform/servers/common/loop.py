"""A background loop: one batch at a time, again at once while batches come back full,
otherwise wait for the interval, a wake-up, or (``wait``) whatever else announces work.
A failed iteration is logged and retried; the loops' state lives in PostgreSQL, so a
crash anywhere loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Wakeups(Protocol):
    """Named wake-ups that may cross processes (adapters.postgres.wakeups: NOTIFY)."""

    def signal(self, name: str) -> Callable[[], None]: ...

    def waiter(self, name: str) -> Callable[[float], Awaitable[None]]: ...


class Loop:
    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[int]],
        interval: float,
        full_batch: int,
        wait: Callable[[float], Awaitable[None]] | None = None,
        interval_of: Callable[[float], float] | None = None,
    ) -> None:
        """``interval_of``: the wait before the next iteration, given ``interval`` (a step
        that knows when its next work is due, such as the head observer)."""
        self.name = name
        self._step = step
        self._interval = interval
        self._interval_of = interval_of
        self._full_batch = full_batch
        self._wait = wait or self._wait_for_wakeup
        self.wakeup = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                done = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("loop iteration failed", extra={"loop": self.name})
                done = 0
            if done < self._full_batch:
                interval = self._interval if self._interval_of is None else self._interval_of(self._interval)
                await self._wait(interval)

    async def _wait_for_wakeup(self, interval: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), interval)
        self.wakeup.clear()
