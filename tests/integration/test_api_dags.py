"""DagService over the public API on a real platform: deploy idempotent by YAML hash,
strict validation errors with field paths, paging, roles, activation and rollback, and
another org's DAG answered exactly like a missing one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.api_support import ApiUser, make_user
from tests.dag_support import dag_yaml
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.core.config import Settings
from trace_platform.gen.trace.api.v1 import dags_pb2 as pb
from trace_platform.gen.trace.api.v1 import dags_pb2_grpc


def _reason(err: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(err)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[RunningPlatform]:
    platform = await start_platform(replace(settings, rpc_pools={"standard": "http://127.0.0.1:9"}), migrate=False)
    yield platform
    await platform.stop(grace=0.5)


@pytest.fixture
async def stub(running: RunningPlatform) -> AsyncIterator[dags_pb2_grpc.DagServiceStub]:
    async with grpc.aio.insecure_channel(running.addr) as ch:
        yield dags_pb2_grpc.DagServiceStub(ch)


@pytest.fixture
async def editor(running: RunningPlatform, settings: Settings) -> ApiUser:
    user = await make_user(running.pool, settings, role="editor")
    await AlertRepository(running.pool).create_definition(user.org_id, "large transfers", ["https://hooks.example/a"])
    return user


async def ready_bundle(pool: asyncpg.Pool, user: ApiUser) -> str:
    """A finalized bundle row of the user's org, as the BundleService leaves it."""
    bundle_id = uuid.uuid4()
    sha = uuid.uuid4().hex * 2
    await pool.execute(
        "INSERT INTO bundles (id, org_id, sha256, size_bytes, runtime, entrypoint, state, staging_uri, url,"
        " created_by, finalized_at) VALUES ($1, $2, $3, 100, 'python', 'handler.main', 'ready', 'file:///s',"
        " $4, $5, now())",
        bundle_id,
        uuid.UUID(user.org_id),
        sha,
        f"file:///bundles/{user.org_id}/{sha}.zip",
        uuid.UUID(user.user_id),
    )
    return str(bundle_id)


async def test_deploy_is_idempotent_and_versions_page(
    stub: dags_pb2_grpc.DagServiceStub, editor: ApiUser, running: RunningPlatform, db: asyncpg.Connection
) -> None:
    bundle = await ready_bundle(running.pool, editor)
    md = editor.metadata
    texts = [dag_yaml(bundle, sql=f"SELECT {i} FROM dataset") for i in range(3)]
    first = await stub.DeployDag(pb.DeployDagRequest(yaml=texts[0]), metadata=md)
    again = await stub.DeployDag(pb.DeployDagRequest(yaml=texts[0]), metadata=md)
    assert not first.already_existed and again.already_existed
    assert again.version.id == first.version.id and again.version.number == 1
    assert len(first.version.yaml_sha256) == 64 and first.version.create_time.seconds > 0
    for t in texts[1:]:
        await stub.DeployDag(pb.DeployDagRequest(yaml=t), metadata=md)
    assert await db.fetchval("SELECT count(*) FROM dag_versions") == 3

    seen, token = [], ""
    while True:
        page = await stub.ListDagVersions(
            pb.ListDagVersionsRequest(dag="transfers", page_size=2, page_token=token), metadata=md
        )
        seen += [v.number for v in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ListDagVersions(pb.ListDagVersionsRequest(dag="transfers", page_token="garbage!"), metadata=md)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _reason(exc.value) == "PAGE_TOKEN_INVALID"

    got = await stub.GetDag(pb.GetDagRequest(name="transfers"), metadata=md)
    assert got.version_count == 3 and not got.HasField("active_version")
    done = await stub.ActivateDagVersion(pb.ActivateDagVersionRequest(dag="transfers", version="2"), metadata=md)
    assert done.changed and done.version.number == 2 and done.previous_version_id == ""
    same = await stub.ActivateDagVersion(
        pb.ActivateDagVersionRequest(dag="transfers", version=done.version.id), metadata=md
    )
    assert not same.changed
    await stub.ActivateDagVersion(pb.ActivateDagVersionRequest(dag="transfers", version="3"), metadata=md)
    back = await stub.RollbackDag(pb.RollbackDagRequest(dag="transfers"), metadata=md)
    assert back.version.number == 2
    got = await stub.GetDag(pb.GetDagRequest(name="transfers"), metadata=md)
    assert got.active_version.number == 2 and got.active_version.active
    listed = await stub.ListDagVersions(pb.ListDagVersionsRequest(dag="transfers"), metadata=md)
    assert got.active_version == listed.versions[1]  # the version's own id, hash and creation time
    assert [v.active for v in listed.versions] == [False, True, False]


@pytest.mark.parametrize(
    ("edit", "reason", "field"),
    [
        (
            lambda t: t.replace("upstream: transfers_ingest.transactions", "upstream: x.transactions"),
            "UNKNOWN_UPSTREAM",
            "jobs[1].upstream",
        ),
        (
            lambda t: t.replace("kind: alert_evaluate", "kind: alert_evaluate\n    colour: red"),
            "UNKNOWN_KEY",
            "jobs[1].colour",
        ),
        (
            lambda t: t.replace("chunk_size: 10", "chunk_size: 0"),
            "OUT_OF_RANGE",
            "jobs[0].chain_sync.streams.transactions.chunk_size",
        ),
        (lambda t: t.replace("alert: large transfers", "alert: nobody"), "UNKNOWN_ALERT", "jobs[1].alert"),
        (lambda t: t.replace("- name: large_transfers", "- name: transfers_ingest"), "DUPLICATE_JOB", "jobs[1].name"),
    ],
)
async def test_invalid_documents_are_refused_with_the_path_and_nothing_is_written(
    stub: dags_pb2_grpc.DagServiceStub,
    editor: ApiUser,
    running: RunningPlatform,
    db: asyncpg.Connection,
    edit: Callable[[str], str],
    reason: str,
    field: str,
) -> None:
    text = dag_yaml(await ready_bundle(running.pool, editor))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.DeployDag(pb.DeployDagRequest(yaml=edit(text)), metadata=editor.metadata)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(exc.value) == reason and field in (exc.value.details() or "")
    assert await db.fetchval("SELECT count(*) FROM dags") == 0
    ok = await stub.DeployDag(pb.DeployDagRequest(yaml=text), metadata=editor.metadata)  # the server lives on
    assert ok.version.number == 1


async def test_a_bundle_of_another_org_or_not_ready_is_unknown(
    stub: dags_pb2_grpc.DagServiceStub, editor: ApiUser, running: RunningPlatform, settings: Settings
) -> None:
    stranger = await make_user(running.pool, settings, role="editor")
    theirs = await ready_bundle(running.pool, stranger)
    pending = await ready_bundle(running.pool, editor)
    await running.pool.execute("UPDATE bundles SET state = 'pending', url = NULL WHERE id = $1", uuid.UUID(pending))
    for bundle in (theirs, pending):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.DeployDag(pb.DeployDagRequest(yaml=dag_yaml(bundle)), metadata=editor.metadata)
        assert _reason(exc.value) == "UNKNOWN_BUNDLE" and "jobs[1].bundle" in (exc.value.details() or "")


async def test_roles_and_org_scoping(
    stub: dags_pb2_grpc.DagServiceStub, editor: ApiUser, running: RunningPlatform, settings: Settings
) -> None:
    await stub.DeployDag(
        pb.DeployDagRequest(yaml=dag_yaml(await ready_bundle(running.pool, editor))), metadata=editor.metadata
    )
    viewer = await make_user(running.pool, settings, role="viewer", org_id=editor.org_id)
    listed = await stub.ListDagVersions(pb.ListDagVersionsRequest(dag="transfers"), metadata=viewer.metadata)
    assert [v.number for v in listed.versions] == [1]
    writes = [
        stub.DeployDag(pb.DeployDagRequest(yaml="name: x\njobs: []\n"), metadata=viewer.metadata),
        stub.ActivateDagVersion(pb.ActivateDagVersionRequest(dag="transfers", version="1"), metadata=viewer.metadata),
        stub.RollbackDag(pb.RollbackDagRequest(dag="transfers"), metadata=viewer.metadata),
    ]
    for call in writes:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED and _reason(exc.value) == "ROLE_REQUIRED"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetDag(pb.GetDagRequest(name="transfers"))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # Another org's admin: the DAG is answered exactly as one that does not exist.
    other = await make_user(running.pool, settings, role="admin")

    async def refusal(call) -> tuple[grpc.StatusCode, str, str]:  # type: ignore[no-untyped-def]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        return exc.value.code(), _reason(exc.value), exc.value.details() or ""

    for name in ("transfers", "nonexistent"):
        answers = {
            await refusal(stub.GetDag(pb.GetDagRequest(name=name), metadata=other.metadata)),
            await refusal(stub.ListDagVersions(pb.ListDagVersionsRequest(dag=name), metadata=other.metadata)),
            await refusal(
                stub.ActivateDagVersion(pb.ActivateDagVersionRequest(dag=name, version="1"), metadata=other.metadata)
            ),
            await refusal(stub.RollbackDag(pb.RollbackDagRequest(dag=name), metadata=other.metadata)),
        }
        assert answers == {(grpc.StatusCode.NOT_FOUND, "DAG_NOT_FOUND", "no DAG of that name")}
    # Deploying the same name in the other org makes that org's own DAG, not a version of ours
    # (its alert name resolves in its own org only).
    await AlertRepository(running.pool).create_definition(other.org_id, "large transfers", ["https://hooks.example/b"])
    mine = await stub.DeployDag(
        pb.DeployDagRequest(yaml=dag_yaml(await ready_bundle(running.pool, other))), metadata=other.metadata
    )
    assert mine.version.number == 1 and not mine.already_existed
