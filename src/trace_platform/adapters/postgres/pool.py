"""Connection pool creation (asyncpg) with JSON codecs left as text on purpose:
jsonb values cross the boundary as JSON text and are parsed where they are used."""

from __future__ import annotations

import asyncpg


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 16) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=60)
    if pool is None:  # pragma: no cover - asyncpg returns None only when used as a context manager
        raise RuntimeError("could not create pool")
    return pool
