"""DAG test support: a DAG document, a bundle lookup test double, and a planned
cryo_ingest range completed through the real Dispatcher (what a cryo worker would do)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import asyncpg

from tests.conftest import eventually
from tests.integration.conftest import publication_at_home
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.models import TaskRef


class StaticBundleLookupDouble:
    """Test double of the BundleService's lookup: bundle ids mapped in the test itself."""

    def __init__(self, bundles: dict[tuple[str, str], tuple[str, str]] | None = None) -> None:
        self.bundles = dict(bundles or {})

    def add(self, org_id: str, url: str = "file:///bundles/test.zip", sha256: str = "ab" * 32) -> str:
        bundle_id = str(uuid.uuid4())
        self.bundles[(org_id, bundle_id)] = (url, sha256)
        return bundle_id

    async def get(self, org_id: str, bundle_id: str) -> tuple[str, str] | None:
        return self.bundles.get((org_id, bundle_id))


def dag_yaml(
    bundle_id: str,
    name: str = "transfers",
    sql: str = "SELECT block_number, value FROM dataset",
    alert: str = "large transfers",
    to_block: int = 1000,
    chunk_size: int = 10,
    extra_jobs: str = "",
) -> str:
    return f"""
name: {name}
jobs:
  - name: {name}_ingest
    kind: chain_sync
    chain_sync:
      chain_id: 31337
      mode: {{kind: fixed_target, from_block: 0, to_block: {to_block}}}
      streams:
        transactions:
          {{cryo_dataset_name: transactions, rpc_pool: standard, chunk_size: {chunk_size}, max_inflight: 50}}
  - name: large_transfers
    kind: alert_evaluate
    bundle: {bundle_id}
    alert: {alert}
    upstream: {name}_ingest.transactions
    sql: {sql}
{extra_jobs}"""


@dataclass(frozen=True)
class PublishedRange:
    task_id: str
    dataset_uuid: str
    dataset_version: str
    start: int
    end: int


async def complete_next_range(
    client: DispatcherClient, db: asyncpg.Connection, settings: Settings, job: str, timeout: float = 15
) -> PublishedRange:
    """Claim the lowest queued range the planner made for ``job`` and complete it with the
    publication it was created for."""

    async def planned() -> asyncpg.Record | None:
        return await db.fetchrow(
            """SELECT t.id, t.declared_outputs::text AS declared FROM tasks t
               JOIN chain_sync_ranges r ON r.task_id = t.id JOIN chain_sync_jobs j ON j.id = r.job_id
               WHERE j.name = $1 AND t.status = 'queued' ORDER BY r.range_start LIMIT 1""",
            job,
        )

    # The chain's head as the head observer records it (fixed_target plans up to it).
    await db.execute(
        """INSERT INTO chain_head_observations (org_id, chain_id, rpc_pool, head_block, observed_at)
           SELECT j.org_id, j.chain_id, s.rpc_pool, 1000000, now()
           FROM chain_sync_jobs j JOIN chain_sync_streams s ON s.job_id = j.id WHERE j.name = $1
           ON CONFLICT (org_id, chain_id, rpc_pool) DO UPDATE SET head_block = 1000000, observed_at = now()""",
        job,
    )
    row = await eventually(planned, timeout=timeout)
    [out] = json.loads(row["declared"])
    task_id = str(row["id"])
    resp = await client.claim(task_id, f"w-{uuid.uuid4().hex[:6]}")
    assert resp.WhichOneof("result") == "claimed"
    ref = TaskRef(task_id, resp.claimed.attempt, resp.claimed.lease_token)
    pub = publication_at_home(
        settings,
        out["dataset_uuid"],
        out["dataset_version"],
        config_hash=out["config_hash"],
        range_start=out["range_start"],
        range_end=out["range_end"],
    )
    await client.complete(ref, resp.claimed.capability_token, datasets_published=[pub])
    return PublishedRange(task_id, out["dataset_uuid"], out["dataset_version"], out["range_start"], out["range_end"])


async def routed_tasks(db: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        """SELECT t.id, t.operator, t.status, t.config::text AS config, t.datasets::text AS datasets,
                  t.declared_outputs::text AS declared, t.dag_version_id, r.job_name, r.dataset_version
           FROM dag_routes r JOIN tasks t ON t.id = r.task_id ORDER BY t.created_at, t.id"""
    )
    return rows
