"""DatasetService logic: org-scoped reads of the registry and Publish (ADR 0008: a name
is metadata only; the dataset keeps its uuid and storage)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.dataset_registry_repository import DatasetRegistryRepository
from trace_platform.core.dataset_registry import (
    ChainSyncStreamSource,
    DagOutputSource,
    DatasetInfo,
    PublishResult,
    require_published_name,
)
from trace_platform.core.errors import InvalidArgument, NotFound
from trace_platform.core.paging import PageRequest
from trace_platform.core.validation import SLUG_RE, require_text
from trace_platform.servers.api.datasets.schema import read_columns
from trace_platform.servers.api.identity import Principal

MAX_NAME_CHARS = 256


def _slugs(*fields: tuple[str, str]) -> None:
    for field, value in fields:
        if not SLUG_RE.fullmatch(value or ""):
            raise InvalidArgument("INVALID_SOURCE", f"{field} must match {SLUG_RE.pattern}", field=field)


def _not_found() -> NotFound:
    # One answer for a dataset that does not exist and one of another org.
    return NotFound("DATASET_NOT_FOUND", "no dataset of this name")


class DatasetService:
    def __init__(self, repo: DatasetRegistryRepository, stores: ObjectStores) -> None:
        self._repo = repo
        self._stores = stores

    async def list_datasets(self, who: Principal, page_size: int, page_token: str) -> tuple[list[DatasetInfo], str]:
        page = PageRequest.parse(page_size, page_token)
        after = page.after_created()
        rows = await self._repo.datasets(who.org_id, after=after, limit=page.size + 1)
        return page.page_by_created(rows, lambda d: (d.created_at, d.dataset_id))

    async def get(self, who: Principal, name: str) -> DatasetInfo:
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidArgument("INVALID_DATASET_NAME", "name is required", field="name")
        require_text("name", name)
        found = await self._repo.datasets(who.org_id, name=name)
        if not found:
            raise _not_found()
        return await self._with_columns(found[0])

    async def _with_columns(self, info: DatasetInfo) -> DatasetInfo:
        if info.current_version is None:
            return info
        ref = await self._repo.version_storage(info.dataset_id, info.current_version)
        if ref is None:
            return info
        columns = await asyncio.to_thread(read_columns, self._stores, ref, frozenset(info.pii_columns))
        return replace(info, columns=columns)

    async def publish(
        self, who: Principal, name: str, source: ChainSyncStreamSource | DagOutputSource | None
    ) -> PublishResult:
        require_published_name(name)
        dataset_uuid = await self._source_dataset(who, source)
        created = await self._repo.publish_name(who.org_id, name, dataset_uuid, who.user_id)
        found = await self._repo.datasets(who.org_id, name=name)
        assert found, "a name just published resolves"
        return PublishResult(await self._with_columns(found[0]), created)

    async def _source_dataset(self, who: Principal, source: ChainSyncStreamSource | DagOutputSource | None) -> str:
        if isinstance(source, ChainSyncStreamSource):
            _slugs(("sync_name", source.sync_name), ("dataset_key", source.dataset_key))
            found = await self._repo.stream_dataset(who.org_id, source.sync_name, source.dataset_key)
            if found is None:
                raise NotFound("SOURCE_NOT_FOUND", "no chain_sync stream of this name")
            return found
        if isinstance(source, DagOutputSource):
            _slugs(("dag_name", source.dag_name), ("job_name", source.job_name))
            # A udf job has one output (index 0); chain_sync jobs of a DAG are published
            # as chain_sync streams, alert_evaluate jobs write the alert_events sink.
            found = None
            if source.output_index == 0:
                found = await self._repo.dag_output_dataset(who.org_id, source.dag_name, source.job_name)
            if found is None:
                raise NotFound("SOURCE_NOT_FOUND", "no DAG output of this name")
            return found
        raise InvalidArgument("MISSING_FIELD", "a source (chain_sync_stream or dag_output) is required", field="source")
