"""The dataset registry as the user API reads and names it (org scoped): entries with
their range and current version, and published names (``dataset_aliases``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.core.dataset_registry import ChainSyncStreamSource, DatasetInfo
from trace_platform.core.errors import AlreadyExists
from trace_platform.core.models import StorageRef

Page = tuple[datetime, str] | None  # keyset position: (created_at, id) of the last row seen


class DatasetRegistryRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("dataset_registry")
        self._datasets_sql = queries.load("datasets")

    async def datasets(
        self, org_id: str, *, name: str | None = None, after: Page = None, limit: int = 1
    ) -> list[DatasetInfo]:
        """One dataset by a name it is known under, or a keyset page by (created_at, id)."""
        rows = await self._pool.fetch(
            self._sql["api_datasets"],
            uuid.UUID(org_id),
            name,
            after[0] if after else None,
            uuid.UUID(after[1]) if after else None,
            limit,
        )
        return [_dataset_info(r) for r in rows]

    async def version_storage(self, dataset_uuid: str, version: str) -> StorageRef | None:
        raw = await self._pool.fetchval(
            self._datasets_sql["version_storage"], uuid.UUID(dataset_uuid), uuid.UUID(version)
        )
        return None if raw is None else StorageRef.from_dict(json.loads(raw))

    async def stream_dataset(self, org_id: str, sync_name: str, dataset_key: str) -> str | None:
        found = await self._pool.fetchval(self._sql["api_stream_dataset"], uuid.UUID(org_id), sync_name, dataset_key)
        return None if found is None else str(found)

    async def dag_output_dataset(self, org_id: str, dag_name: str, job_name: str) -> str | None:
        found = await self._pool.fetchval(self._sql["api_dag_output_dataset"], uuid.UUID(org_id), dag_name, job_name)
        return None if found is None else str(found)

    async def publish_name(self, org_id: str, name: str, dataset_uuid: str, user_id: str) -> bool:
        """Bind ``name`` to the dataset and mark it published. False when the name already
        names it; AlreadyExists (nothing written) when another dataset holds the name."""
        org = uuid.UUID(org_id)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql["api_lock_name"], org_id, name)
            holders = {r["dataset_uuid"] for r in await conn.fetch(self._sql["api_name_holder"], org, name)}
            if holders - {dataset_uuid}:
                raise AlreadyExists("DATASET_NAME_TAKEN", "another dataset of the org has this name")
            if holders:
                return False
            await conn.execute(self._sql["api_insert_alias"], org, name, uuid.UUID(dataset_uuid), uuid.UUID(user_id))
            await conn.execute(self._sql["api_mark_published"], uuid.UUID(dataset_uuid), org)
            return True


def _dataset_info(r: asyncpg.Record) -> DatasetInfo:
    source = ChainSyncStreamSource(r["sync_name"], r["dataset_key"]) if r["sync_name"] is not None else None
    return DatasetInfo(
        dataset_id=r["id"],
        name=r["name"],
        published_names=tuple(r["aliases"]),
        kind=r["kind"],
        published=r["published"],
        current_version=r["current_version"],
        range_start=r["range_start"],
        range_end=r["range_end"],
        version_count=int(r["version_count"]),
        pii_columns=tuple(r["pii_columns"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        chain_sync_stream=source,
    )
