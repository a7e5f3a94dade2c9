"""Alert definitions, the sink's all-or-nothing batch apply, and dead letters."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.core.alert_api import (
    AlertDeliveryInfo,
    AlertEventInfo,
    AlertInfo,
    WebhookView,
    webhook_display,
)
from trace_platform.core.alert_definitions import WebhookChannel, validate_definition
from trace_platform.core.alert_rows import AlertRow, BatchRejected
from trace_platform.core.errors import AlreadyExists, InvalidArgument


@dataclass(frozen=True)
class PublishRecord:
    """The Dispatcher's trusted record of one buffer publish."""

    publish_id: str
    task_id: str
    attempt: int
    org_id: str
    batch_uri: str
    status: str


@dataclass(frozen=True)
class DeadLetterRow:
    dead_letter_id: str
    seq: int
    publish_id: str
    org_id: str
    task_id: str
    batch_uri: str
    reason: str
    row_number: int
    created_at: datetime
    replayed_at: datetime | None


def _columns(rows: Sequence[AlertRow]) -> list[list[object]]:
    return [
        [r.dedupe_key for r in rows],
        [r.event_time for r in rows],
        [r.payload_json for r in rows],
        [r.alert_definition_id for r in rows],
        [r.severity for r in rows],
        [r.chain_id for r in rows],
        [r.block_number for r in rows],
        [r.block_hash for r in rows],
        [r.tx_hash for r in rows],
        [r.source_dataset_uuid for r in rows],
        [r.partition_key for r in rows],
        [r.cursor_value for r in rows],
    ]


class AlertRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("alerts")

    async def create_definition(self, org_id: str, name: str, webhooks: list[str], enabled: bool = True) -> str:
        """Validates the webhook URLs (http/https) and stores the definition."""
        channels = validate_definition(name, webhooks)
        body = json.dumps([c.as_json() for c in channels])
        try:
            return str(await self._pool.fetchval(self._sql["insert_definition"], org_id, name, body, enabled))
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("ALERT_DEFINITION_EXISTS", "an alert definition with this name exists") from None

    async def get_publish(self, publish_id: str) -> PublishRecord | None:
        r = await self._pool.fetchrow(self._sql["get_publish"], uuid.UUID(publish_id))
        if r is None:
            return None
        return PublishRecord(
            str(r["id"]), str(r["task_id"]), r["attempt"], str(r["org_id"]), r["batch_uri"], r["status"]
        )

    async def apply_batch(self, publish: PublishRecord, rows: Sequence[AlertRow], from_status: str) -> int | None:
        """In one transaction: upsert every row with the publish's org and task, route
        the new events to deliveries, mark the publish applied. Returns the number of
        new events, or None when the publish is no longer in ``from_status`` (another
        consumer got there first). Raises ``BatchRejected`` (nothing written) when a
        row names an alert definition that is not the org's."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(self._sql["lock_publish"], uuid.UUID(publish.publish_id))
            if status != from_status:
                return None
            await self._check_definitions(conn, publish.org_id, rows)
            created = (
                await conn.fetch(self._sql["upsert_events"], publish.org_id, publish.task_id, *_columns(rows))
                if rows
                else []
            )
            ids = [r["id"] for r in created]
            if ids:
                await conn.execute(self._sql["route_events"], ids)
            await conn.execute(self._sql["mark_publish"], uuid.UUID(publish.publish_id), "applied")
            if from_status == "dead_lettered":
                await conn.execute(self._sql["mark_replayed"], uuid.UUID(publish.publish_id))
            return len(ids)

    async def _check_definitions(self, conn: asyncpg.Connection, org_id: str, rows: Sequence[AlertRow]) -> None:
        named = {r.alert_definition_id for r in rows if r.alert_definition_id is not None}
        if not named:
            return
        found = {str(r["id"]) for r in await conn.fetch(self._sql["existing_definitions"], org_id, list(named))}
        for number, row in enumerate(rows, start=1):
            if row.alert_definition_id is not None and row.alert_definition_id not in found:
                raise BatchRejected("UNKNOWN_ALERT_DEFINITION", number, "alert_definition_id")

    async def dead_letter(self, publish: PublishRecord, reason: str, row_number: int) -> str | None:
        """Record the rejection and mark the publish dead-lettered (None: already applied)."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.fetchval(self._sql["lock_publish"], uuid.UUID(publish.publish_id))
            if status == "applied":
                return None
            dl_id = await conn.fetchval(
                self._sql["upsert_dead_letter"],
                uuid.UUID(publish.publish_id),
                publish.org_id,
                publish.task_id,
                publish.batch_uri,
                reason,
                row_number,
            )
            await conn.execute(self._sql["mark_publish"], uuid.UUID(publish.publish_id), "dead_lettered")
            return str(dl_id)

    async def list_dead_letters(self, after_seq: int, limit: int) -> list[DeadLetterRow]:
        rows = await self._pool.fetch(self._sql["list_dead_letters"], after_seq, limit)
        return [
            DeadLetterRow(
                str(r["id"]),
                r["seq"],
                str(r["publish_id"]),
                str(r["org_id"]),
                str(r["task_id"]),
                r["batch_uri"],
                r["reason"],
                r["row_number"],
                r["created_at"],
                r["replayed_at"],
            )
            for r in rows
        ]

    async def get_dead_letter(self, dead_letter_id: str) -> tuple[str, datetime | None] | None:
        """(publish_id, replayed_at) of a dead letter."""
        r = await self._pool.fetchrow(self._sql["get_dead_letter"], uuid.UUID(dead_letter_id))
        return None if r is None else (str(r["publish_id"]), r["replayed_at"])


Page = tuple[datetime, str] | None  # keyset position: (created_at, id) of the last row seen


def _page_args(after: Page) -> tuple[datetime | None, uuid.UUID | None]:
    return (after[0], uuid.UUID(after[1])) if after else (None, None)


def _channels_json(channels: Sequence[WebhookChannel]) -> str:
    return json.dumps([c.as_json() for c in channels])


def _alert_info(r: asyncpg.Record) -> AlertInfo:
    # The stored URLs are read here and only their display form leaves.
    hooks = tuple(WebhookView(ch["key"], webhook_display(ch.get("url", ""))) for ch in json.loads(r["channels"]))
    return AlertInfo(
        r["id"], r["name"], r["description"], r["severity"], r["enabled"], hooks, r["created_at"], r["updated_at"]
    )


class AlertApiRepository:
    """Alert definitions, events and deliveries for the user API; every query org scoped."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("alerts")

    async def create(
        self,
        org_id: str,
        name: str,
        channels: Sequence[WebhookChannel],
        *,
        enabled: bool,
        description: str,
        severity: str | None,
    ) -> AlertInfo:
        try:
            row = await self._pool.fetchrow(
                self._sql["api_insert_definition"],
                uuid.UUID(org_id),
                name,
                _channels_json(channels),
                enabled,
                description,
                severity,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("ALERT_DEFINITION_EXISTS", "an alert definition with this name exists") from None
        except asyncpg.CheckViolationError:
            raise InvalidArgument("INVALID_ALERT", "the alert definition is not valid") from None
        assert row is not None
        return _alert_info(row)

    async def page(self, org_id: str, after: Page, limit: int) -> list[AlertInfo]:
        rows = await self._pool.fetch(self._sql["api_definitions"], uuid.UUID(org_id), None, *_page_args(after), limit)
        return [_alert_info(r) for r in rows]

    async def get(self, org_id: str, alert_id: str) -> AlertInfo | None:
        rows = await self._pool.fetch(
            self._sql["api_definitions"], uuid.UUID(org_id), uuid.UUID(alert_id), None, None, 1
        )
        return _alert_info(rows[0]) if rows else None

    async def update(
        self,
        org_id: str,
        alert_id: str,
        *,
        channels: Sequence[WebhookChannel] | None,
        enabled: bool | None,
        description: str | None,
        severity: str | None,
    ) -> AlertInfo | None:
        row = await self._pool.fetchrow(
            self._sql["api_update_definition"],
            uuid.UUID(org_id),
            uuid.UUID(alert_id),
            None if channels is None else _channels_json(channels),
            enabled,
            description,
            severity,
        )
        return None if row is None else _alert_info(row)

    async def events(self, org_id: str, alert_id: str, after: Page, limit: int) -> list[AlertEventInfo]:
        rows = await self._pool.fetch(
            self._sql["api_events"], uuid.UUID(org_id), uuid.UUID(alert_id), *_page_args(after), limit
        )
        return [
            AlertEventInfo(
                r["id"],
                r["alert_id"],
                r["severity"],
                r["chain_id"],
                r["block_number"],
                r["block_hash"],
                r["tx_hash"],
                r["dedupe_key"],
                r["payload"],
                r["event_time"],
                r["created_at"],
            )
            for r in rows
        ]

    async def event_exists(self, org_id: str, event_id: str) -> bool:
        found = await self._pool.fetchval(self._sql["api_event_exists"], uuid.UUID(org_id), uuid.UUID(event_id))
        return found is not None

    async def deliveries(
        self, org_id: str, *, alert_id: str | None, event_id: str | None, after: Page, limit: int
    ) -> list[AlertDeliveryInfo]:
        rows = await self._pool.fetch(
            self._sql["api_deliveries"],
            uuid.UUID(org_id),
            uuid.UUID(alert_id) if alert_id else None,
            uuid.UUID(event_id) if event_id else None,
            *_page_args(after),
            limit,
        )
        return [
            AlertDeliveryInfo(
                r["id"],
                r["event_id"],
                r["alert_id"],
                WebhookView(r["channel"], webhook_display(r["url"]) if r["url"] else "(removed)"),
                r["status"],
                r["attempt"],
                r["response_code"],
                r["error_message"],
                r["last_attempt_at"],
                r["next_attempt_at"] if r["status"] in ("pending", "retrying") else None,
                r["delivered_at"],
                r["created_at"],
            )
            for r in rows
        ]
