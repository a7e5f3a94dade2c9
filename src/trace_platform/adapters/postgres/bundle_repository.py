"""UDF bundles of the user API, always scoped to an org: a bundle of another org is
indistinguishable from a missing one (``get`` answers None for both)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries

# A Finalize claim older than this was abandoned (its process died mid-check).
STALE_CLAIM_SECONDS = 600.0


@dataclass(frozen=True)
class BundleRecord:
    id: str
    org_id: str
    name: str
    sha256: str
    size: int
    runtime: str
    entrypoint: str
    state: str  # pending | finalizing | ready | failed
    # The immutable object the invoker fetches (file:// or s3://); None until ready.
    url: str | None
    staging_uri: str
    failure: str | None
    created_at: datetime
    finalized_at: datetime | None

    @property
    def finalized(self) -> bool:
        """Usable: its object was checked (SHA-256, size, signed manifest) and published."""
        return self.state == "ready"


def _record(row: asyncpg.Record) -> BundleRecord:
    return BundleRecord(
        id=str(row["id"]),
        org_id=str(row["org_id"]),
        name=row["name"],
        sha256=row["sha256"],
        size=row["size_bytes"],
        runtime=row["runtime"],
        entrypoint=row["entrypoint"],
        state=row["state"],
        url=row["url"],
        staging_uri=row["staging_uri"],
        failure=row["failure"],
        created_at=row["created_at"],
        finalized_at=row["finalized_at"],
    )


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


class BundleRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("bundles")

    async def get(self, org_id: str, bundle_id: str) -> BundleRecord | None:
        """The bundle ``bundle_id`` of ``org_id`` in any state, or None (missing, another
        org's, or not an id at all). Callers that run it must check ``finalized``."""
        org, bid = _uuid(org_id), _uuid(bundle_id)
        if org is None or bid is None:
            return None
        row = await self._pool.fetchrow(self._sql["get"], org, bid)
        return _record(row) if row else None

    async def ready_by_sha256(self, org_id: str, sha256: str) -> BundleRecord | None:
        row = await self._pool.fetchrow(self._sql["ready_by_sha256"], uuid.UUID(org_id), sha256)
        return _record(row) if row else None

    async def insert_pending(
        self,
        bundle_id: str,
        org_id: str,
        *,
        name: str,
        sha256: str,
        size: int,
        runtime: str,
        staging_uri: str,
        created_by: str,
    ) -> BundleRecord:
        row = await self._pool.fetchrow(
            self._sql["insert_pending"],
            uuid.UUID(bundle_id),
            uuid.UUID(org_id),
            name,
            sha256,
            size,
            runtime,
            staging_uri,
            uuid.UUID(created_by),
        )
        return _record(row)

    async def insert_ready(
        self,
        bundle_id: str,
        org_id: str,
        *,
        name: str,
        sha256: str,
        size: int,
        runtime: str,
        entrypoint: str,
        url: str,
        created_by: str,
    ) -> BundleRecord:
        """A bundle already checked and published; the existing one when the org has
        these bytes READY already (idempotent by content)."""
        row = await self._pool.fetchrow(
            self._sql["insert_ready"],
            uuid.UUID(bundle_id),
            uuid.UUID(org_id),
            name,
            sha256,
            size,
            runtime,
            entrypoint,
            url,
            uuid.UUID(created_by),
        )
        if row is None:
            existing = await self.ready_by_sha256(org_id, sha256)
            if existing is None:  # READY a moment ago, so never removed: cannot happen
                raise RuntimeError("a conflicting ready bundle vanished")
            return existing
        return _record(row)

    async def expire_pending(self, org_id: str, older_than_seconds: float, limit: int) -> list[str]:
        """Mark up to ``limit`` pending uploads older than that FAILED; their staged objects."""
        rows = await self._pool.fetch(self._sql["expire_pending"], uuid.UUID(org_id), older_than_seconds, limit)
        return [r["staging_uri"] for r in rows]

    async def release(self, org_id: str, bundle_id: str) -> None:
        await self._pool.execute(self._sql["release"], uuid.UUID(org_id), uuid.UUID(bundle_id))

    async def claim(self, org_id: str, bundle_id: str) -> BundleRecord | None:
        """Take a pending bundle for Finalize; None when it is not pending (or a live
        Finalize holds it)."""
        row = await self._pool.fetchrow(
            self._sql["claim"], uuid.UUID(org_id), uuid.UUID(bundle_id), STALE_CLAIM_SECONDS
        )
        return _record(row) if row else None

    async def mark_ready(
        self, org_id: str, bundle_id: str, url: str, runtime: str, entrypoint: str
    ) -> BundleRecord | None:
        """None when the same content became ready under another id meanwhile: this row is
        then removed and the existing bundle is the answer (see ``ready_by_sha256``)."""
        args: tuple[Any, ...] = (uuid.UUID(org_id), uuid.UUID(bundle_id))
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    row = await conn.fetchrow(self._sql["mark_ready"], *args, url, runtime, entrypoint)
            except asyncpg.UniqueViolationError:
                await conn.execute(self._sql["delete_unfinished"], *args)
                return None
        return _record(row) if row else None

    async def mark_failed(self, org_id: str, bundle_id: str, reason: str) -> None:
        await self._pool.execute(self._sql["mark_failed"], uuid.UUID(org_id), uuid.UUID(bundle_id), reason)

    async def delete_unfinished(self, org_id: str, bundle_id: str) -> None:
        await self._pool.execute(self._sql["delete_unfinished"], uuid.UUID(org_id), uuid.UUID(bundle_id))

    async def list_page(self, org_id: str, limit: int, after: tuple[datetime, str] | None) -> list[BundleRecord]:
        """Up to ``limit`` bundles of the org after the keyset ``(created_at, id)``."""
        at, bid = (after[0], uuid.UUID(after[1])) if after else (None, None)
        rows = await self._pool.fetch(self._sql["list_page"], uuid.UUID(org_id), at, bid, limit)
        return [_record(r) for r in rows]
