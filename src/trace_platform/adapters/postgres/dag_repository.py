"""DAGs in PostgreSQL: deploy (idempotent by YAML hash), versions, atomic activation and
rollback, and routing of published dataset versions to downstream tasks (migration 0011).
Every user-facing read and write is scoped by org; another org's DAG is not found."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from trace_platform.adapters.postgres import queries
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.core.chain_sync import spec_from_dict
from trace_platform.core.dag_config import (
    CHAIN_SYNC,
    UDF,
    DagSpec,
    canonical_jobs,
    udf_dataset_name,
    udf_dataset_uuid,
)
from trace_platform.core.dag_routing import RoutedTask, build_task, target_from_row
from trace_platform.core.errors import AlreadyExists, FailedPrecondition, NotFound
from trace_platform.core.paging import PageRequest

DAG_NOT_FOUND = "DAG_NOT_FOUND"
DAG_VERSION_NOT_FOUND = "DAG_VERSION_NOT_FOUND"
ROUTE_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class DagVersion:
    id: str
    dag: str
    number: int
    yaml_sha256: str
    created_at: datetime
    already_existed: bool = False
    active: bool = False


@dataclass(frozen=True)
class DagInfo:
    id: str
    name: str
    created_at: datetime
    version_count: int
    active: DagVersion | None


@dataclass(frozen=True)
class Activation:
    dag: str
    version: DagVersion
    previous_version_id: str | None
    changed: bool  # False: the version was already active


def _not_found() -> NotFound:
    return NotFound(DAG_NOT_FOUND, "no DAG of that name")


class DagRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("dags")
        self._chain_sync = ChainSyncRepository(pool)

    # --- deploy and read --------------------------------------------------------------------

    async def deploy(
        self,
        org_id: str,
        user_id: str | None,
        spec: DagSpec,
        yaml_text: str,
        yaml_sha256: str,
        resolved: Mapping[str, dict[str, Any]],
    ) -> DagVersion:
        """The version of this YAML: the existing one (no row written) or a new one with its jobs."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql["ensure_dag"], uuid.uuid4(), org_id, spec.name)
            dag = await conn.fetchrow(self._sql["lock_dag"], org_id, spec.name)
            existing = await conn.fetchrow(self._sql["version_by_sha"], dag["id"], yaml_sha256)
            if existing is not None:
                return _version(existing, spec.name, already_existed=True, active_id=dag["active_version_id"])
            row = await conn.fetchrow(
                self._sql["insert_version"], uuid.uuid4(), dag["id"], org_id, yaml_text, yaml_sha256, user_id
            )
            jobs = canonical_jobs(spec)
            await conn.execute(
                self._sql["insert_jobs"],
                row["id"],
                [j["name"] for j in jobs],
                [j["kind"] for j in jobs],
                [json.dumps(j, sort_keys=True) for j in jobs],
                [json.dumps(resolved.get(j["name"], {}), sort_keys=True) for j in jobs],
            )
            return _version(row, spec.name)

    async def get(self, org_id: str, name: str) -> DagInfo:
        row = await self._pool.fetchrow(self._sql["get_dag"], org_id, name)
        if row is None:
            raise _not_found()
        active = None
        if row["active_id"] is not None:
            active = DagVersion(
                str(row["active_id"]),
                name,
                row["active_seq"],
                row["active_sha256"],
                row["active_created_at"],
                active=True,
            )
        return DagInfo(str(row["id"]), name, row["created_at"], int(row["version_count"]), active)

    async def list_versions(self, org_id: str, name: str, page: PageRequest) -> tuple[list[DagVersion], str]:
        after = page.after_created()
        after_t, after_id = (after[0], uuid.UUID(after[1])) if after else (None, None)
        async with self._pool.acquire() as conn:
            if await conn.fetchrow(self._sql["get_dag"], org_id, name) is None:
                raise _not_found()
            rows = await conn.fetch(self._sql["list_versions"], org_id, name, after_t, after_id, page.size + 1)
        versions = [_version(r, name, active=bool(r["active"])) for r in rows]
        return page.page_by_created(versions, lambda v: (v.created_at, v.id))

    # --- activation -------------------------------------------------------------------------

    async def activate(self, org_id: str, name: str, version: str) -> Activation:
        """Move the active pointer to ``version`` (an id or a number) in one transaction that
        also applies the version's chain_sync jobs, pauses the ones it dropped, registers its
        udf datasets and records which dataset each job reads. Anything refused: nothing moved."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                dag = await conn.fetchrow(self._sql["lock_dag"], org_id, name)
                if dag is None:
                    raise _not_found()
                row = await self._find_version(conn, dag["id"], version)
                return await self._activate(conn, org_id, name, dag, row)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(
                "DAG_ACTIVATION_CONFLICT", "a dataset of this version is held by another job; nothing was activated"
            ) from None

    async def rollback(self, org_id: str, name: str) -> Activation:
        """Activate the version that was active before the current one."""
        async with self._pool.acquire() as conn, conn.transaction():
            dag = await conn.fetchrow(self._sql["lock_dag"], org_id, name)
            if dag is None:
                raise _not_found()
            if dag["previous_version_id"] is None:
                raise FailedPrecondition("DAG_NO_PREVIOUS_VERSION", "no version was active before the current one")
            row = await self._find_version(conn, dag["id"], str(dag["previous_version_id"]))
            return await self._activate(conn, org_id, name, dag, row)

    async def _find_version(self, conn: asyncpg.Connection, dag_id: uuid.UUID, version: str) -> asyncpg.Record:
        as_id: uuid.UUID | None = None
        as_seq: int | None = None
        try:
            as_id = uuid.UUID(version)
        except ValueError:
            if version.isdigit() and len(version) <= 9:
                as_seq = int(version)
        row = await conn.fetchrow(self._sql["find_version"], dag_id, as_id, as_seq) if as_id or as_seq else None
        if row is None:
            raise NotFound(DAG_VERSION_NOT_FOUND, "no version of this DAG with that id or number")
        return row

    async def _activate(
        self, conn: asyncpg.Connection, org_id: str, name: str, dag: asyncpg.Record, row: asyncpg.Record
    ) -> Activation:
        previous = str(dag["active_version_id"]) if dag["active_version_id"] else None
        version = _version(row, name, active=True)
        if previous == version.id:
            return Activation(name, version, str(dag["previous_version_id"] or "") or None, changed=False)
        jobs = await conn.fetch(self._sql["version_jobs"], row["id"])
        specs = {j["name"]: json.loads(j["spec"]) for j in jobs}
        kinds = {j["name"]: j["kind"] for j in jobs}
        chain_names = [n for n, k in kinds.items() if k == CHAIN_SYNC]
        for job_name in chain_names:
            owner = await conn.fetchrow(self._sql["chain_sync_owner"], org_id, job_name)
            if owner is not None and owner["owner_dag_id"] not in (None, dag["id"]):
                raise FailedPrecondition(
                    "CHAIN_SYNC_OWNED_ELSEWHERE", f"chain_sync job {job_name!r} belongs to another DAG"
                )
            job_id, _ = await self._chain_sync.apply_in(conn, org_id, spec_from_dict(specs[job_name]["chain_sync"]))
            await conn.execute(self._sql["adopt_chain_sync"], uuid.UUID(job_id), dag["id"])
        await conn.execute(self._sql["pause_dropped_chain_sync"], dag["id"], chain_names)
        for job_name in (n for n, k in kinds.items() if k == UDF):
            ds = udf_dataset_uuid(org_id, name, job_name)
            await conn.execute(self._sql["register_udf_dataset"], ds, org_id, udf_dataset_name(name, job_name))
            holder = await conn.fetchval(self._sql["dataset_owner"], org_id, udf_dataset_name(name, job_name))
            if str(holder) != ds:
                raise FailedPrecondition("DATASET_NAME_TAKEN", f"dataset {udf_dataset_name(name, job_name)!r} is taken")
        inputs: list[tuple[str, str, str]] = []
        for job_name, spec in specs.items():
            for ref in spec.get("upstream", []):
                head, _, key = ref.partition(".")
                if key:
                    ds_uuid = await conn.fetchval(self._sql["stream_dataset"], org_id, head, key)
                else:
                    ds_uuid = udf_dataset_uuid(org_id, name, head)
                inputs.append((job_name, ref, str(ds_uuid)))
        if inputs:
            await conn.execute(
                self._sql["insert_inputs"],
                row["id"],
                [i[0] for i in inputs],
                [i[1] for i in inputs],
                [i[2] for i in inputs],
            )
        await conn.execute(self._sql["set_active"], dag["id"], row["id"])
        return Activation(name, version, previous, changed=True)

    # --- routing ----------------------------------------------------------------------------

    async def route(self, conn: asyncpg.Connection, events: Sequence[tuple[str, str]]) -> list[str]:
        """In the caller's transaction: for each published ``(dataset_uuid, version)``, one task
        per downstream job of an active version (none when the ledger already has it).
        Returns the ids of the tasks this call created."""
        routed: list[RoutedTask] = []
        for dataset_uuid, dataset_version in dict.fromkeys(events):
            for r in await conn.fetch(self._sql["route_targets"], dataset_uuid, dataset_version):
                task = build_task(target_from_row(r, dataset_uuid, dataset_version))
                if task is not None:
                    routed.append(task)
        if not routed:
            return []
        rows = await conn.fetch(
            self._sql["insert_routes"],
            [t.target.dag_id for t in routed],
            [t.target.job_name for t in routed],
            [t.target.dataset_uuid for t in routed],
            [t.target.dataset_version for t in routed],
            [t.target.org_id for t in routed],
            [t.target.dag_version_id for t in routed],
            [t.task_id for t in routed],
            [t.operator for t in routed],
            [json.dumps(t.config) for t in routed],
            [json.dumps(t.datasets) for t in routed],
            [json.dumps(t.declared_outputs) for t in routed],
            [ROUTE_MAX_ATTEMPTS for _ in routed],
        )
        return [r["task_id"] for r in rows]


def _version(
    row: asyncpg.Record,
    dag: str,
    already_existed: bool = False,
    active: bool = False,
    active_id: uuid.UUID | None = None,
) -> DagVersion:
    return DagVersion(
        id=str(row["id"]),
        dag=dag,
        number=int(row["seq"]),
        yaml_sha256=row["yaml_sha256"],
        created_at=row["created_at"],
        already_existed=already_existed,
        active=active or (active_id is not None and active_id == row["id"]),
    )
