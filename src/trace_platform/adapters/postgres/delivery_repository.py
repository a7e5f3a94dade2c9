"""The alert_deliveries work queue: lease due rows, read what to send, record outcomes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries


@dataclass(frozen=True)
class DueDelivery:
    delivery_id: str
    org_id: str
    channel: str
    attempt: int
    url: str | None  # None: the channel is gone from the definition
    event: dict[str, Any]


def _event(r: asyncpg.Record) -> dict[str, Any]:
    def opt(name: str) -> str | None:
        value = r[name]
        return None if value is None else str(value)

    return {
        "delivery_id": str(r["id"]),
        "alert_event_id": str(r["alert_event_id"]),
        "org_id": str(r["org_id"]),
        "alert_definition_id": opt("alert_definition_id"),
        "channel": r["channel"],
        "severity": r["severity"],
        "chain_id": r["chain_id"],
        "block_number": r["block_number"],
        "block_hash": r["block_hash"],
        "tx_hash": r["tx_hash"],
        "source_dataset_uuid": opt("source_dataset_uuid"),
        "partition_key": r["partition_key"],
        "cursor_value": r["cursor_value"],
        "dedupe_key": r["dedupe_key"],
        "event_time": r["event_time"].isoformat(),
        "created_at": r["created_at"].isoformat(),
        "payload": json.loads(r["payload"]),
    }


class DeliveryRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("deliveries")

    async def lease_due(self, limit: int, lease_seconds: float, owner: str) -> list[DueDelivery]:
        leased = await self._pool.fetch(self._sql["lease_due"], limit, lease_seconds, owner)
        if not leased:
            return []
        rows = await self._pool.fetch(self._sql["delivery_details"], [r["id"] for r in leased])
        return [
            DueDelivery(str(r["id"]), str(r["org_id"]), r["channel"], r["attempt"], r["url"], _event(r)) for r in rows
        ]

    async def mark_delivered(self, d: DueDelivery, owner: str, code: int) -> bool:
        done = await self._pool.execute(self._sql["mark_delivered"], uuid.UUID(d.delivery_id), d.attempt, owner, code)
        return bool(done.endswith(" 1"))

    async def mark_attempt_failed(
        self,
        d: DueDelivery,
        owner: str,
        code: int | None,
        error: str,
        max_attempts: int,
        retry_base: float,
        retry_max: float,
        give_up: bool = False,
    ) -> str | None:
        """The new status ('retrying' or 'failed'); None when the lease was lost."""
        status: str | None = await self._pool.fetchval(
            self._sql["mark_attempt_failed"],
            uuid.UUID(d.delivery_id),
            d.attempt,
            owner,
            code,
            error[:1024],
            max_attempts,
            retry_base,
            retry_max,
            give_up,
        )
        return status

    async def counts(self) -> dict[str, int]:
        return {r["status"]: r["n"] for r in await self._pool.fetch(self._sql["delivery_counts"])}


__all__: Sequence[str] = ["DeliveryRepository", "DueDelivery"]
