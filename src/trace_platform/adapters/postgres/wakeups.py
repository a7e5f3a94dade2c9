"""Named wake-ups between roles through PostgreSQL NOTIFY.

``signal(name)`` gives the plain callable a component is built with (``on_datasets_published``,
a servicer's ``wake_planner``): it wakes this process's waiters at once and notifies every
other process, so a planner in another Dispatcher replica wakes too. ``waiter(name)`` is
what a ``Loop`` waits with. Wake-ups are hints: a lost one costs one loop interval, never
work, because the loops' state lives in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.notify import NotifyListener

log = logging.getLogger(__name__)
CHANNEL = "trace_wakeup"


class PostgresWakeups:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("wakeups")
        self._listener = NotifyListener(pool, CHANNEL)
        self._queued: set[str] = set()  # names with a NOTIFY not yet sent: signals coalesce
        self._sending: set[asyncio.Task[None]] = set()

    def signal(self, name: str) -> Callable[[], None]:
        def wake() -> None:
            self._listener.set(name)
            if name in self._queued:
                return
            self._queued.add(name)
            task = asyncio.get_running_loop().create_task(self._send(name), name=f"wakeup:{name}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

        return wake

    def waiter(self, name: str) -> Callable[[float], Awaitable[None]]:
        return functools.partial(self._listener.wait, name)

    async def _send(self, name: str) -> None:
        # Cleared before sending: a signal raised while this NOTIFY is in flight sends another.
        self._queued.discard(name)
        try:
            await self._pool.execute(self._sql["notify"], CHANNEL, name)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("wake-up not sent; its waiters poll", extra={"wakeup": name, "error": type(exc).__name__})

    async def close(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._listener.close()
