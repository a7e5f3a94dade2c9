"""PostgreSQL lookups a DAG deploy resolves (servers.api.dags.lookups Protocols)."""

from __future__ import annotations

import uuid

import asyncpg

from trace_platform.adapters.postgres import queries


class PostgresBundleLookup:
    """Reads the BundleService's ``bundles`` table (migration 0012): ready rows only."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("dag_lookups")

    async def get(self, org_id: str, bundle_id: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(self._sql["ready_bundle"], uuid.UUID(org_id), uuid.UUID(bundle_id))
        return (row["url"], row["sha256"]) if row is not None else None


class PostgresAlertLookup:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("dag_lookups")

    async def id_by_name(self, org_id: str, name: str) -> str | None:
        found = await self._pool.fetchval(self._sql["alert_by_name"], uuid.UUID(org_id), name)
        return str(found) if found is not None else None
