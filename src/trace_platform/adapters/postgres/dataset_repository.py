"""Dataset registry and query audit: name resolution, version registration and cutover,
and each query's audit row, opened while it runs and closed after (never the SQL text)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.models import DatasetPublication, StorageRef
from trace_platform.core.sql_columns import ColumnRefs


@dataclass(frozen=True)
class ResolvedDataset:
    dataset_uuid: str
    versions: tuple[tuple[str, StorageRef], ...]  # (dataset_version, storage_ref), pinned for one query
    # Each version's block range [start, end) (None for a versioned dataset), in the same order.
    ranges: tuple[tuple[int | None, int | None], ...] = ()


@dataclass(frozen=True)
class QueryAuditRecord:
    """Who asks what of which dataset version: the row opened before the query's answer."""

    org_id: str
    dataset_uuid: str
    dataset_version: str
    sql_sha256: str
    rpc: str
    task_id: str | None = None
    attempt: int | None = None
    user_id: str | None = None


@dataclass(frozen=True)
class QueryAuditClose:
    """How an opened query ended: ``ok`` with its row count, or ``failed`` with a reason code."""

    audit_id: int
    outcome: str
    duration_ms: float
    row_count: int | None = None
    failure_reason: str | None = None


async def register_version(conn: asyncpg.Connection, pub: DatasetPublication, producer_task_id: str | None) -> None:
    """Idempotent: the same version with the same storage is a no-op; other storage is a conflict."""
    sql = queries.load("datasets")
    storage = json.dumps(pub.storage_ref.to_dict(), sort_keys=True)
    inserted = await conn.fetchval(
        sql["insert_version"],
        pub.dataset_uuid,
        pub.dataset_version,
        storage,
        pub.config_hash,
        pub.range_start,
        pub.range_end,
        producer_task_id,
    )
    if inserted is None:
        existing = await conn.fetchval(sql["version_storage"], pub.dataset_uuid, pub.dataset_version)
        if json.loads(existing) != pub.storage_ref.to_dict():
            raise FailedPrecondition(
                "DATASET_VERSION_CONFLICT", "this dataset version is registered with other storage"
            )


class DatasetRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("datasets")

    async def resolve_published(self, org_id: str, name: str) -> ResolvedDataset | None:
        rows = await self._pool.fetch(self._sql["resolve_published"], org_id, name)
        if not rows:
            return None
        return ResolvedDataset(
            dataset_uuid=rows[0]["dataset_uuid"],
            versions=tuple(
                (r["dataset_version"], StorageRef.from_dict(json.loads(r["storage_ref"])))
                for r in rows
                if r["dataset_version"] is not None
            ),
            ranges=tuple((r["range_start"], r["range_end"]) for r in rows if r["dataset_version"] is not None),
        )

    async def publish(self, org_id: str, name: str, pub: DatasetPublication, pii_columns: Sequence[str] = ()) -> None:
        """Register ``pub`` and make it the version ``name`` resolves to, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await register_version(conn, pub, None)
            dataset_id = await conn.fetchval(
                self._sql["upsert_dataset"], pub.dataset_uuid, org_id, name, list(pii_columns)
            )
            if str(dataset_id) != pub.dataset_uuid:
                raise FailedPrecondition("DATASET_NAME_TAKEN", "the name is bound to another dataset")
            await conn.execute(self._sql["cut_over"], pub.dataset_uuid, pub.dataset_version, list(pii_columns))

    async def open_query_audit(self, audit: QueryAuditRecord, refs: ColumnRefs) -> int | None:
        """The 'running' audit row, plus a PII access row when classified columns are read;
        one statement, one round trip. None, with nothing written, when the record names a
        task attempt that is not the task's current, running one."""
        row = await self._pool.fetchrow(self._sql["open_query_audit"], *_open_args(audit, refs))
        return None if row is None else int(row["audit_id"])

    async def open_query_audits(self, audits: Sequence[QueryAuditRecord], refs: ColumnRefs) -> tuple[int, ...]:
        """One 'running' row (and PII access row) per dataset of a query over several, all
        in one transaction: the access to every dataset is on record, or to none. Empty,
        with nothing written, when the records' task attempt is not current."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                ids = []
                for audit in audits:
                    audit_id = await conn.fetchval(self._sql["open_query_audit"], *_open_args(audit, refs))
                    if audit_id is None:
                        raise _AttemptEnded  # rolls back the rows of this query written so far
                    ids.append(int(audit_id))
        except _AttemptEnded:
            return ()
        return tuple(ids)

    async def close_query_audits(self, closes: Sequence[QueryAuditClose]) -> None:
        await self._pool.execute(
            self._sql["close_query_audits"],
            [c.audit_id for c in closes],
            [c.outcome for c in closes],
            [c.row_count for c in closes],
            [c.duration_ms for c in closes],
            [c.failure_reason for c in closes],
        )


class _AttemptEnded(Exception):
    """Inside ``open_query_audits``: the attempt ended between two of its rows."""


def _open_args(audit: QueryAuditRecord, refs: ColumnRefs) -> tuple[object, ...]:
    return (
        audit.org_id,
        audit.task_id,
        audit.attempt,
        audit.user_id,
        audit.dataset_uuid,
        audit.dataset_version,
        audit.sql_sha256,
        audit.rpc,
        refs.all_columns,
        sorted(refs.names),
    )
