"""DAGs that run: deploy is idempotent by YAML hash, activation applies the chain_sync jobs
and moves the pointer in one transaction, and every publication of an upstream version
routes to exactly one task per downstream job of the ACTIVE version, granted that version."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import grpc
import pytest

from tests.conftest import eventually
from tests.dag_support import StaticBundleLookupDouble, complete_next_range, dag_yaml, routed_tasks
from tests.integration.conftest import ORG, publication_at_home
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from trace_platform.core.models import TaskRef
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Principal, Role

WHO = Principal(ORG, str(uuid.uuid4()), Role.EDITOR)


@pytest.fixture
def dag_settings(settings: Settings) -> Settings:
    return replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"})


@pytest.fixture
async def running(dag_settings: Settings) -> AsyncIterator[RunningPlatform]:
    platform = await start_platform(dag_settings, migrate=False)
    yield platform
    await platform.stop(grace=0.5)


@pytest.fixture
async def client(running: RunningPlatform, dag_settings: Settings) -> AsyncIterator[DispatcherClient]:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        yield DispatcherClient(ch, worker_token=dag_settings.worker_token, admin_token=dag_settings.admin_token)


@pytest.fixture
def bundles() -> StaticBundleLookupDouble:
    return StaticBundleLookupDouble()


@pytest.fixture
async def service(running: RunningPlatform, bundles: StaticBundleLookupDouble) -> DagService:
    await AlertRepository(running.pool).create_definition(ORG, "large transfers", ["https://hooks.example/a"])
    return DagService(DagRepository(running.pool), bundles, PostgresAlertLookup(running.pool), {"standard"})


async def test_deploy_is_idempotent_by_yaml_hash(
    service: DagService, bundles: StaticBundleLookupDouble, db: asyncpg.Connection
) -> None:
    text = dag_yaml(bundles.add(ORG))
    first = await service.deploy(WHO, text)
    again = await service.deploy(WHO, text)
    assert (again.id, again.number, again.yaml_sha256) == (first.id, 1, first.yaml_sha256)
    assert (first.already_existed, again.already_existed) == (False, True)
    assert await db.fetchval("SELECT count(*) FROM dag_versions") == 1
    assert await db.fetchval("SELECT count(*) FROM dag_jobs") == 2
    second = await service.deploy(WHO, text + "# reviewed\n")
    assert second.number == 2 and not second.already_existed
    with pytest.raises(asyncpg.CheckViolationError):  # versions are immutable
        await db.execute("UPDATE dag_versions SET yaml = 'x'")


async def test_deploy_resolves_bundle_and_alert_or_refuses_with_the_path(
    service: DagService, bundles: StaticBundleLookupDouble, db: asyncpg.Connection
) -> None:
    other_org = bundles.add(str(uuid.uuid4()))  # a bundle of another org is unknown here
    for yaml_text, reason, field in [
        (dag_yaml(str(uuid.uuid4())), "UNKNOWN_BUNDLE", "jobs[1].bundle"),
        (dag_yaml(other_org), "UNKNOWN_BUNDLE", "jobs[1].bundle"),
        (dag_yaml(bundles.add(ORG), alert="nobody"), "UNKNOWN_ALERT", "jobs[1].alert"),
        (
            dag_yaml(bundles.add(ORG)).replace("rpc_pool: standard", "rpc_pool: premium"),
            "RPC_POOL_UNKNOWN",
            "jobs[0].chain_sync.streams.transactions.rpc_pool",
        ),
    ]:
        with pytest.raises(InvalidArgument) as exc:
            await service.deploy(WHO, yaml_text)
        assert (exc.value.reason, exc.value.metadata["field"]) == (reason, field)
    assert await db.fetchval("SELECT count(*) FROM dags") == 0  # nothing partially written


async def test_publications_route_once_to_the_active_version_granted_the_new_range(
    service: DagService,
    bundles: StaticBundleLookupDouble,
    client: DispatcherClient,
    dag_settings: Settings,
    db: asyncpg.Connection,
) -> None:
    bundle = bundles.add(ORG, "file:///bundles/alerts.zip", "cd" * 32)
    v1 = await service.deploy(WHO, dag_yaml(bundle, sql="SELECT 1 AS v1 FROM dataset"))
    v2 = await service.deploy(WHO, dag_yaml(bundle, sql="SELECT 2 AS v2 FROM dataset"))
    activation = await service.activate(WHO, "transfers", "1")
    assert activation.changed and activation.version.id == v1.id
    owner = await db.fetchval("SELECT owner_dag_id FROM chain_sync_jobs WHERE name = 'transfers_ingest'")
    assert owner is not None

    first = await complete_next_range(client, db, dag_settings, "transfers_ingest")

    async def routed(n: int) -> list[asyncpg.Record] | None:
        rows = await routed_tasks(db)
        return rows if len(rows) >= n else None

    [t1] = await eventually(lambda: routed(1))
    config = json.loads(t1["config"])
    assert t1["operator"] == "alert_evaluate" and str(t1["dag_version_id"]) == v1.id
    assert (config["dataset_uuid"], config["dataset_version"]) == (first.dataset_uuid, first.dataset_version)
    assert (config["range_start"], config["range_end"]) == (first.start, first.end)
    assert (config["bundle_url"], config["bundle_sha256"]) == ("file:///bundles/alerts.zip", "cd" * 32)
    definition = await db.fetchval("SELECT id FROM alert_definitions WHERE name = 'large transfers'")
    assert config["alert_definition_id"] == str(definition) and config["sql"] == "SELECT 1 AS v1 FROM dataset"
    [grant] = json.loads(t1["datasets"])
    assert (grant["dataset_uuid"], grant["dataset_version"]) == (first.dataset_uuid, first.dataset_version)
    assert json.loads(t1["declared"]) == []
    # Its wake-up went to the queue like any task's.
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM queue_messages WHERE payload->>'task_id' = $1", str(t1["id"]))
    )

    # The routed task starts running on v1; then v2 is activated.
    claimed = await client.claim(str(t1["id"]), "w-alert")
    assert claimed.WhichOneof("result") == "claimed"
    assert (await service.activate(WHO, "transfers", v2.id)).previous_version_id == v1.id
    second = await complete_next_range(client, db, dag_settings, "transfers_ingest")
    rows = await eventually(lambda: routed(2))
    t2 = rows[1]
    assert str(t2["dag_version_id"]) == v2.id and json.loads(t2["config"])["sql"] == "SELECT 2 AS v2 FROM dataset"
    assert json.loads(t2["config"])["dataset_version"] == second.dataset_version
    # The running task finishes on the version it started with.
    ref = TaskRef(str(t1["id"]), claimed.claimed.attempt, claimed.claimed.lease_token)
    done = await client.complete(ref, claimed.claimed.capability_token)
    assert done.status == common_pb2.TASK_STATUS_COMPLETED
    again = await db.fetchrow("SELECT config::text AS config, dag_version_id FROM tasks WHERE id = $1", t1["id"])
    assert str(again["dag_version_id"]) == v1.id and json.loads(again["config"])["sql"].endswith("v1 FROM dataset")

    # Rollback: v1 again, for the next publication.
    back = await service.rollback(WHO, "transfers")
    assert back.version.id == v1.id
    await complete_next_range(client, db, dag_settings, "transfers_ingest")
    rows = await eventually(lambda: routed(3))
    assert str(rows[2]["dag_version_id"]) == v1.id

    # Duplicate events and replayed route_event rows for the first range add no task.
    await db.execute(
        "INSERT INTO outbox (kind, payload) SELECT 'route_event', jsonb_build_object("
        "'dataset_uuid', $1::text, 'dataset_version', $2::text) FROM generate_series(1, 5)",
        first.dataset_uuid,
        first.dataset_version,
    )
    await eventually(lambda: _outbox_drained(db))
    assert len(await routed_tasks(db)) == 3
    assert await db.fetchval("SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate'") == 3


async def _outbox_drained(db: asyncpg.Connection) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM outbox WHERE status = 'pending'") == 0)


async def test_activation_is_atomic_and_another_dag_cannot_take_a_chain_sync_job(
    service: DagService, bundles: StaticBundleLookupDouble, db: asyncpg.Connection
) -> None:
    bundle = bundles.add(ORG)
    await service.deploy(WHO, dag_yaml(bundle))
    await service.activate(WHO, "transfers", "1")
    # Same chain_sync job name in another DAG: refused, nothing of it applied or activated.
    thief = dag_yaml(bundle, name="thief").replace("thief_ingest", "transfers_ingest")
    await service.deploy(WHO, thief)
    with pytest.raises(FailedPrecondition) as exc:
        await service.activate(WHO, "thief", "1")
    assert exc.value.reason == "CHAIN_SYNC_OWNED_ELSEWHERE"
    assert await db.fetchval("SELECT active_version_id FROM dags WHERE name = 'thief'") is None
    # A version whose chain_sync change is refused moves nothing either.
    lowered = dag_yaml(bundle, to_block=500)
    await service.deploy(WHO, lowered)
    before = await db.fetchval("SELECT active_version_id FROM dags WHERE name = 'transfers'")
    with pytest.raises(FailedPrecondition) as exc:
        await service.activate(WHO, "transfers", "2")
    assert exc.value.reason == "CHAIN_SYNC_IMMUTABLE_FIELD"
    assert await db.fetchval("SELECT active_version_id FROM dags WHERE name = 'transfers'") == before
    assert await db.fetchval("SELECT to_block FROM chain_sync_jobs WHERE name = 'transfers_ingest'") == 1000
    with pytest.raises(NotFound):
        await service.activate(WHO, "transfers", "9")
    with pytest.raises(NotFound):
        await service.activate(Principal(str(uuid.uuid4()), WHO.user_id, Role.EDITOR), "transfers", "1")
    with pytest.raises(FailedPrecondition) as exc:
        await service.rollback(WHO, "transfers")
    assert exc.value.reason == "DAG_NO_PREVIOUS_VERSION"


UDF_JOBS = """  - name: enrich
    kind: udf
    bundle: {bundle}
    upstream: [transfers_ingest.transactions]
  - name: on_enriched
    kind: alert_evaluate
    bundle: {bundle}
    alert: large transfers
    upstream: enrich
    sql: SELECT * FROM dataset
"""


async def test_a_udf_is_routed_may_publish_only_its_own_version_and_its_publication_routes_on(
    service: DagService,
    bundles: StaticBundleLookupDouble,
    client: DispatcherClient,
    dag_settings: Settings,
    db: asyncpg.Connection,
) -> None:
    bundle = bundles.add(ORG)
    await service.deploy(WHO, dag_yaml(bundle, extra_jobs=UDF_JOBS.format(bundle=bundle)))
    await service.activate(WHO, "transfers", "1")
    published = await complete_next_range(client, db, dag_settings, "transfers_ingest")

    async def routed(n: int) -> list[asyncpg.Record] | None:
        rows = await routed_tasks(db)
        return rows if len(rows) >= n else None

    rows = await eventually(lambda: routed(2))
    by_job = {r["job_name"]: r for r in rows}
    assert set(by_job) == {"large_transfers", "enrich"}
    udf = by_job["enrich"]
    config = json.loads(udf["config"])
    assert udf["operator"] == "udf"
    [source] = config["inputs"]
    assert (source["dataset_uuid"], source["dataset_version"]) == (published.dataset_uuid, published.dataset_version)
    assert (source["range_start"], source["range_end"], source["relation"]) == (
        published.start,
        published.end,
        "transfers_ingest_transactions",
    )
    [declared] = json.loads(udf["declared"])
    assert declared == config["output"]
    registered = await db.fetchrow(
        "SELECT org_id, name FROM datasets WHERE id = $1", uuid.UUID(declared["dataset_uuid"])
    )
    assert (str(registered["org_id"]), registered["name"]) == (ORG, "transfers.enrich")

    claimed = await client.claim(str(udf["id"]), "w-udf")
    ref = TaskRef(str(udf["id"]), claimed.claimed.attempt, claimed.claimed.lease_token)
    token = claimed.claimed.capability_token
    # The wall: another version of its own dataset, or the upstream's, is refused.
    for ds, version in ((declared["dataset_uuid"], str(uuid.uuid4())), (published.dataset_uuid, str(uuid.uuid4()))):
        with pytest.raises(PermissionDenied):
            await client.complete(ref, token, datasets_published=[publication_at_home(dag_settings, ds, version)])
    mine = publication_at_home(
        dag_settings, declared["dataset_uuid"], declared["dataset_version"], config_hash=declared["config_hash"]
    )
    done = await client.complete(ref, token, datasets_published=[mine])
    assert done.status == common_pb2.TASK_STATUS_COMPLETED
    rows = await eventually(lambda: routed(3))
    downstream = next(r for r in rows if r["job_name"] == "on_enriched")
    down = json.loads(downstream["config"])
    assert (down["dataset_uuid"], down["dataset_version"]) == (declared["dataset_uuid"], declared["dataset_version"])
    assert (down["range_start"], down["range_end"]) == (None, None)


async def test_activation_pauses_the_chain_sync_jobs_a_version_dropped_and_rollback_resumes_them(
    service: DagService, bundles: StaticBundleLookupDouble, db: asyncpg.Connection
) -> None:
    bundle = bundles.add(ORG)
    await service.deploy(WHO, dag_yaml(bundle))
    await service.deploy(WHO, dag_yaml(bundle).replace("transfers_ingest", "second_ingest"))

    async def enabled() -> dict[str, bool]:
        return {r["name"]: r["enabled"] for r in await db.fetch("SELECT name, enabled FROM chain_sync_jobs")}

    await service.activate(WHO, "transfers", "1")
    assert await enabled() == {"transfers_ingest": True}
    await service.activate(WHO, "transfers", "2")
    assert await enabled() == {"transfers_ingest": False, "second_ingest": True}
    await service.rollback(WHO, "transfers")
    assert await enabled() == {"transfers_ingest": True, "second_ingest": False}
