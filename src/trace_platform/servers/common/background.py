"""Background coroutines a component owns: started together, cancelled and awaited together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackgroundTasks:
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, named: dict[str, Coroutine[Any, Any, None]]) -> None:
        self._tasks += [asyncio.create_task(coro, name=name) for name, coro in named.items()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
