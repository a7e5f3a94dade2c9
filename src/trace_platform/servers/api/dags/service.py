"""DagService logic: validate a DAG document in full before anything is written, resolve
what it names in the caller's org, then deploy, list, activate or roll back. Org scoped:
every call acts on the principal's org only."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from trace_platform.adapters.postgres.dag_repository import Activation, DagInfo, DagRepository, DagVersion
from trace_platform.core.chain_sync import check_rpc_pools
from trace_platform.core.dag_config import (
    UNKNOWN_ALERT,
    UNKNOWN_BUNDLE,
    AlertEvaluateJob,
    ChainSyncJob,
    DagSpec,
    UdfJob,
    parse_dag,
    udf_dataset_uuid,
    yaml_sha256,
)
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import PageRequest
from trace_platform.core.yaml_strict import MAX_YAML_BYTES
from trace_platform.servers.api.dags.lookups import AlertLookup, BundleLookup
from trace_platform.servers.api.identity import Principal


class DagService:
    def __init__(
        self,
        repo: DagRepository,
        bundles: BundleLookup,
        alerts: AlertLookup,
        rpc_pools: Collection[str],
        wake_planner: Callable[[], None] = lambda: None,
    ) -> None:
        self._repo = repo
        self._bundles = bundles
        self._alerts = alerts
        self._rpc_pools = rpc_pools  # names only: the pools this platform has a URL for
        self._wake_planner = wake_planner

    async def deploy(self, who: Principal, yaml_text: str) -> DagVersion:
        if len(yaml_text.encode()) > MAX_YAML_BYTES:
            raise InvalidArgument("PAYLOAD_TOO_LARGE", f"yaml exceeds {MAX_YAML_BYTES} bytes", field="yaml")
        spec = parse_dag(yaml_text)
        resolved = await self._resolve(who.org_id, spec)
        return await self._repo.deploy(who.org_id, who.user_id, spec, yaml_text, yaml_sha256(yaml_text), resolved)

    async def _resolve(self, org_id: str, spec: DagSpec) -> dict[str, dict[str, Any]]:
        """Per job, what it names in the org: refused (with the job's path) when absent."""
        out: dict[str, dict[str, Any]] = {}
        for i, job in enumerate(spec.jobs):
            path = f"jobs[{i}]"
            if isinstance(job, ChainSyncJob):
                try:
                    check_rpc_pools(job.spec, self._rpc_pools)
                except InvalidArgument as exc:
                    field = f"{path}.chain_sync.{exc.metadata.get('field', '')}"
                    raise InvalidArgument(exc.reason, f"{path}.chain_sync.{exc.message}", field=field) from None
                continue
            found = await self._bundles.get(org_id, job.bundle_id)
            if found is None:
                raise InvalidArgument(
                    UNKNOWN_BUNDLE, f"{path}.bundle: no finalized bundle with that id", field=f"{path}.bundle"
                )
            entry: dict[str, Any] = {"bundle_url": found[0], "bundle_sha256": found[1]}
            if isinstance(job, AlertEvaluateJob):
                definition = await self._alerts.id_by_name(org_id, job.alert)
                if definition is None:
                    raise InvalidArgument(
                        UNKNOWN_ALERT, f"{path}.alert: no alert definition of that name", field=f"{path}.alert"
                    )
                entry["alert_definition_id"] = definition
            elif isinstance(job, UdfJob):
                entry["output_dataset_uuid"] = udf_dataset_uuid(org_id, spec.name, job.name)
            out[job.name] = entry
        return out

    async def get(self, who: Principal, name: str) -> DagInfo:
        return await self._repo.get(who.org_id, name)

    async def list_versions(self, who: Principal, name: str, page: PageRequest) -> tuple[list[DagVersion], str]:
        return await self._repo.list_versions(who.org_id, name, page)

    async def activate(self, who: Principal, name: str, version: str) -> Activation:
        result = await self._repo.activate(who.org_id, name, version)
        self._wake_planner()  # a new chain_sync job plans now, not at the next tick
        return result

    async def rollback(self, who: Principal, name: str) -> Activation:
        result = await self._repo.rollback(who.org_id, name)
        self._wake_planner()
        return result
