"""Is a task attempt still the one running? The check behind every credential bound to
an attempt: a valid signature proves who issued a token, not that its attempt is alive."""

from __future__ import annotations

import asyncpg

from trace_platform.adapters.postgres import queries


class AttemptRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("attempts")

    async def is_current(self, task_id: str, attempt: int) -> bool:
        """One indexed round trip (the tasks primary key)."""
        return bool(await self._pool.fetchval(self._sql["attempt_is_current"], task_id, attempt))
