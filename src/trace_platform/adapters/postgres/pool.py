"""Connection pool creation (asyncpg) with JSON codecs left as text on purpose:
jsonb values cross the boundary as JSON text and are parsed where they are used."""

from __future__ import annotations

import asyncpg


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Our code never leaves session state behind (no SET, no held locks outside a
    transaction, LISTEN only on a dedicated connection), so skip asyncpg's reset round
    trip on every release."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 16) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=60, reset=_no_reset)
    if pool is None:  # pragma: no cover - asyncpg returns None only when used as a context manager
        raise RuntimeError("could not create pool")
    return pool
