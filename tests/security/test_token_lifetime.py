"""Issue 13, hole 5: tokens that outlive their attempt, and even their expiry.

Against a real platform (Dispatcher, Query Service, worker runtime) on loopback and a real
PostgreSQL: a token verified once is refused once it has expired (TaskQuery and the
Dispatcher's task RPCs, single and batch); a token whose attempt was cancelled, completed,
failed or reaped and retried is refused by TaskQuery at once (ATTEMPT_NOT_CURRENT, nothing
audited) while the current attempt's token works; heartbeats renew short-lived tokens, and
a task running several TTLs completes through the worker runtime. Then the claims
themselves: user JWTs and capability tokens with a lifetime beyond the maximum, ``exp`` in
the year 9999, time claims of the wrong type, ``nbf`` in the future, or identity claims of
the wrong type are UNAUTHENTICATED with a reason code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any

import asyncpg
import grpc
import jwt
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.datasets import FIXTURE_ROWS, FixtureDataset, write_dataset
from tests.integration.conftest import ORG
from trace_platform.adapters.invoker.base import Invocation
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.batching import BatchingDispatcherClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import TraceError, Unauthenticated
from trace_platform.core.keys import KeyRing, SigningKey
from trace_platform.core.models import DatasetGrant, StorageRef, TaskRef
from trace_platform.core.tokens import CapabilityClaims, TokenIssuer, TokenVerifier
from trace_platform.core.user_tokens import USER_AUDIENCE, UserTokenVerifier, issue_user_token
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.workers.runtime import OperatorContext, OperatorResult, WorkerRuntime

pb = dispatcher_pb2
COUNT = "SELECT count(*) FROM dataset"
N_ROWS = pa.table(FIXTURE_ROWS).num_rows


@dataclass
class Lab:
    platform: RunningPlatform
    client: DispatcherClient
    batching: BatchingDispatcherClient
    query: QueryClient
    dataset: FixtureDataset
    db: asyncpg.Connection

    async def claim(self, **spec: Any) -> tuple[TaskRef, str]:
        task = pb.TaskSpec(org_id=ORG, operator="noop", datasets=[self.dataset.grant_pb], **spec)
        task_id = (await self.client.create_tasks([task]))[0]
        return await self.claim_id(task_id)

    async def claim_id(self, task_id: str) -> tuple[TaskRef, str]:
        resp = await self.client.claim(task_id, f"w-{uuid.uuid4().hex[:6]}")
        assert resp.WhichOneof("result") == "claimed", resp
        c = resp.claimed
        return TaskRef(c.task.task_id, c.attempt, c.lease_token), c.capability_token

    async def count(self, ref: TaskRef, token: str) -> int:
        rows = await self.query.task_query(token, ref.task_id, ref.attempt, self.dataset.dataset_uuid, COUNT)
        return int(rows.rows[0][0])

    async def audit_rows(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM query_audit"))


@contextlib.asynccontextmanager
async def lab(settings: Settings, db: asyncpg.Connection, ttl: int = 300, **dispatcher: Any) -> AsyncIterator[Lab]:
    tuned = replace(
        settings,
        tokens=replace(settings.tokens, ttl_seconds=ttl),
        dispatcher=replace(settings.dispatcher, **dispatcher),
    )
    running = await start_platform(tuned, migrate=False)
    try:
        (tuned.data_dir / "objects").mkdir(parents=True, exist_ok=True)
        store = LocalObjectStore([tuned.data_dir / "objects"])
        dataset = write_dataset(store, f"file://{tuned.data_dir / 'objects'}", [pa.table(FIXTURE_ROWS)])
        async with grpc.aio.insecure_channel(running.addr) as ch:
            w, a = tuned.worker_token, tuned.admin_token
            single = DispatcherClient(ch, worker_token=w, admin_token=a)
            batching = BatchingDispatcherClient(ch, worker_token=w, admin_token=a)
            yield Lab(running, single, batching, QueryClient(ch), dataset, db)
    finally:
        await running.stop(grace=0.5)


def exp_of(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def sleep_past(token: str) -> None:
    await asyncio.sleep(max(0.0, exp_of(token) - time.time()) + 0.2)


async def reason_of(call: Any) -> tuple[str, str]:
    with pytest.raises(TraceError) as exc:
        await call
    return type(exc.value).__name__, exc.value.reason


# --- expiry -------------------------------------------------------------------------------


async def test_a_token_verified_once_is_refused_after_it_expires(settings: Settings, db: asyncpg.Connection) -> None:
    async with lab(settings, db, ttl=2) as lb:
        ref, cap = await lb.claim()
        # Verified (and cached) by the Query Service and the Dispatcher while valid.
        assert await lb.count(ref, cap) == N_ROWS
        ev = common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()), cursor=1)
        assert await lb.client.emit_events(ref, cap, [ev]) == 1
        await sleep_past(cap)
        expired = ("Unauthenticated", "CAPABILITY_TOKEN_EXPIRED")
        assert await reason_of(lb.count(ref, cap)) == expired
        assert await reason_of(lb.client.emit_events(ref, cap, [ev])) == expired
        assert await reason_of(lb.client.heartbeat(ref, cap)) == expired
        assert await reason_of(lb.batching.heartbeat(ref, cap)) == expired
        assert await reason_of(lb.batching.complete(ref, cap)) == expired
        assert await reason_of(lb.client.buffer_publish(ref, cap, "file:///x/y.jsonl", 1)) == expired
        # Nothing the expired token asked for was done.
        assert await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id)) == "running"
        assert await lb.audit_rows() == 1


# --- the attempt must be the task's current, running one ------------------------------------


async def _cancel(lb: Lab, ref: TaskRef, cap: str) -> None:
    await lb.client.complete(ref, cap, pb.COMPLETION_STATUS_CANCELED)


async def _complete(lb: Lab, ref: TaskRef, cap: str) -> None:
    await lb.client.complete(ref, cap)


async def _fail_for_good(lb: Lab, ref: TaskRef, cap: str) -> None:
    await lb.client.complete(ref, cap, pb.COMPLETION_STATUS_FAILED, error_message="boom")


async def _reaped(lb: Lab, ref: TaskRef, cap: str) -> None:
    """The lease lapses and the reaper fails the attempt (a retry is scheduled)."""
    await lb.db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = $1", uuid.UUID(ref.task_id)
    )

    async def reaped() -> bool:
        status = await lb.db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
        return bool(status != "running")

    await eventually(reaped)


async def _cancelled_in_the_database(lb: Lab, ref: TaskRef, cap: str) -> None:
    await lb.db.execute(
        "UPDATE tasks SET status = 'canceled', lease_token = NULL WHERE id = $1", uuid.UUID(ref.task_id)
    )


@pytest.mark.parametrize("end", [_cancel, _complete, _fail_for_good, _reaped, _cancelled_in_the_database])
async def test_an_ended_attempts_token_is_refused_by_task_query_at_once(
    settings: Settings, db: asyncpg.Connection, end: Callable[[Lab, TaskRef, str], Any]
) -> None:
    # A retry an hour away: a reaped attempt stays the task's latest attempt, not running.
    async with lab(settings, db, retry_base_seconds=3600.0, retry_max_seconds=3600.0) as lb:
        ref, cap = await lb.claim(max_attempts=1 if end is _fail_for_good else 3)
        assert await lb.count(ref, cap) == N_ROWS  # verified and cached
        await end(lb, ref, cap)
        before = await lb.audit_rows()
        assert await reason_of(lb.count(ref, cap)) == ("Unauthenticated", "ATTEMPT_NOT_CURRENT")
        assert await lb.audit_rows() == before  # the query never ran
        if end is not _reaped:  # a reaped attempt's late reply is accepted by design (Fence.LATE)
            ev = common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()), cursor=1)
            for call in (lb.client.emit_events(ref, cap, [ev]), lb.batching.heartbeat(ref, cap)):
                kind, _ = await reason_of(call)
                assert kind in ("Aborted", "FailedPrecondition")


async def test_an_ended_attempts_slow_query_is_killed_when_its_audit_row_is_refused(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """The attempt check rides on the audit statement sent once the query process has the
    query: for an ended attempt the statement writes nothing, and the query (minutes of
    cross join) is killed then, not run to its end before the refusal."""
    slow = "SELECT count(*) FROM " + ", ".join(f"dataset t{i}" for i in range(24))
    async with lab(settings, db) as lb:
        ref, cap = await lb.claim(max_attempts=3)
        assert await lb.count(ref, cap) == N_ROWS
        await _cancelled_in_the_database(lb, ref, cap)
        workers = lb.platform.query.workers
        before, audited = set(workers.pids()), await lb.audit_rows()
        call = lb.query.task_query(cap, ref.task_id, ref.attempt, lb.dataset.dataset_uuid, slow)
        assert await reason_of(call) == ("Unauthenticated", "ATTEMPT_NOT_CURRENT")
        assert await lb.audit_rows() == audited
        # The process that held the query was killed (a clean one would have been kept).
        assert before - set(workers.pids())


async def test_a_superseded_attempts_token_is_refused_and_the_current_one_works(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with lab(settings, db) as lb:
        old_ref, old_cap = await lb.claim(max_attempts=3)
        assert await lb.count(old_ref, old_cap) == N_ROWS
        await _reaped(lb, old_ref, old_cap)

        async def requeued() -> bool:
            status = await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(old_ref.task_id))
            return bool(status == "queued")

        await eventually(requeued)
        new_ref, new_cap = await lb.claim_id(old_ref.task_id)
        assert new_ref.attempt == old_ref.attempt + 1
        assert await lb.count(new_ref, new_cap) == N_ROWS
        # The old token is still unexpired and validly signed: its attempt is what ended.
        assert exp_of(old_cap) > time.time() + 60
        assert await reason_of(lb.count(old_ref, old_cap)) == ("Unauthenticated", "ATTEMPT_NOT_CURRENT")
        # Naming the new attempt with the old token is a binding mismatch, as before.
        assert await reason_of(lb.count(new_ref, old_cap)) == ("PermissionDenied", "TOKEN_TASK_MISMATCH")
        # The Dispatcher's task RPCs are fenced too: the old attempt can do nothing.
        ev = common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()), cursor=1)
        for call in (
            lb.client.heartbeat(old_ref, old_cap),
            lb.batching.heartbeat(old_ref, old_cap),
            lb.client.emit_events(old_ref, old_cap, [ev]),
        ):
            kind, _ = await reason_of(call)
            assert kind in ("Aborted", "FailedPrecondition")
        assert await lb.count(new_ref, new_cap) == N_ROWS


# --- renewal by heartbeat -------------------------------------------------------------------


@pytest.mark.parametrize("batching", [False, True])
async def test_a_heartbeat_renews_the_token_which_works_and_expires_later(
    settings: Settings, db: asyncpg.Connection, batching: bool
) -> None:
    async with lab(settings, db, ttl=4) as lb:
        client = lb.batching if batching else lb.client
        ref, cap = await lb.claim()
        fresh = await client.renew(ref, cap)
        assert fresh.capability_token is None  # more than half its TTL left: keep it
        await asyncio.sleep(max(0.0, exp_of(cap) - 2.0 - time.time()) + 0.2)  # less than half left
        answer = await client.renew(ref, cap)
        renewed = answer.capability_token
        assert renewed is not None and renewed != cap and answer.capability_expires_at is not None
        assert exp_of(renewed) > exp_of(cap) and answer.capability_expires_at.timestamp() == exp_of(renewed)
        claims = jwt.decode(renewed, options={"verify_signature": False})
        old = jwt.decode(cap, options={"verify_signature": False})
        same = ("org_id", "task_id", "attempt", "datasets", "s3", "sub", "aud", "iss")
        assert {k: claims[k] for k in same} == {k: old[k] for k in same}
        await sleep_past(cap)
        assert await reason_of(lb.count(ref, cap)) == ("Unauthenticated", "CAPABILITY_TOKEN_EXPIRED")
        assert await lb.count(ref, renewed) == N_ROWS
        await client.heartbeat(ref, renewed)
        assert (await client.complete(ref, renewed)).status == common_pb2.TASK_STATUS_COMPLETED


async def test_a_heartbeat_with_a_stolen_token_but_no_lease_renews_nothing(
    settings: Settings, db: asyncpg.Connection
) -> None:
    async with lab(settings, db, ttl=4) as lb:
        ref, cap = await lb.claim()
        await asyncio.sleep(max(0.0, exp_of(cap) - 2.0 - time.time()) + 0.2)
        wrong = TaskRef(ref.task_id, ref.attempt, str(uuid.uuid4()))
        kind, _ = await reason_of(lb.client.renew(wrong, cap))
        assert kind in ("Aborted", "FailedPrecondition")


async def test_a_task_running_several_ttls_completes_through_the_worker_runtime(
    settings: Settings, db: asyncpg.Connection
) -> None:
    tokens: list[str] = []

    async def long_task(ctx: OperatorContext) -> OperatorResult:
        tokens.append(ctx.capability_token)
        await asyncio.sleep(9.0)  # more than twice the TTL
        tokens.append(ctx.capability_token)
        rows = await lb.query.task_query(
            ctx.capability_token, ctx.ref.task_id, ctx.ref.attempt, lb.dataset.dataset_uuid, COUNT
        )
        assert rows.rows == [[N_ROWS]]
        return OperatorResult()

    async with lab(settings, db, ttl=4, lease_seconds=3.0) as lb:
        worker = WorkerRuntime(lb.platform.queue, lb.batching, {"long": long_task}, lb.platform.settings.worker)
        task = pb.TaskSpec(org_id=ORG, operator="long", datasets=[lb.dataset.grant_pb])
        task_id = (await lb.client.create_tasks([task]))[0]
        loop = asyncio.create_task(worker.run())
        try:

            async def done() -> bool:
                return (await lb.client.get_task(task_id)).task.status == common_pb2.TASK_STATUS_COMPLETED

            await eventually(done, timeout=30)
        finally:
            loop.cancel()
            await worker.stop()
        first, last = tokens
        assert first != last and exp_of(first) < time.time() < exp_of(last)
        assert [a.outcome for a in (await lb.client.get_task(task_id)).attempts] == ["completed"]


# --- the claims themselves ------------------------------------------------------------------

SECRET = "s" * 32
USER_ISS = "trace-test"


def user_token(**over: Any) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": USER_ISS,
        "aud": USER_AUDIENCE,
        "sub": "ada",
        "org_id": ORG,
        "iat": now,
        "exp": now + 3600,
    }
    for k, v in over.items():
        if v is _DROP:
            payload.pop(k)
        else:
            payload[k] = v
    return jwt.encode(payload, SECRET, "HS256", headers={"kid": "lite-user"})


_DROP = object()
NOW = int(time.time())  # at import: cases stay valid for an hour of test run


@pytest.mark.parametrize(
    "over, reason",
    [
        (dict(iat=NOW, exp=NOW + 25 * 3600), "USER_TOKEN_LIFETIME_TOO_LONG"),
        (dict(exp=253402300799), "USER_TOKEN_LIFETIME_TOO_LONG"),  # 9999-12-31
        (dict(iat=0, exp=NOW + 7200), "USER_TOKEN_LIFETIME_TOO_LONG"),
        (dict(exp=_DROP), "USER_TOKEN_INVALID"),
        (dict(iat=_DROP), "USER_TOKEN_INVALID"),
        (dict(iat=str(NOW)), "USER_TOKEN_INVALID"),
        (dict(iat=True), "USER_TOKEN_INVALID"),
        (dict(iat=math.nan), "USER_TOKEN_INVALID"),
        (dict(exp=math.inf), "USER_TOKEN_INVALID"),
        (dict(exp=str(NOW + 60)), "USER_TOKEN_INVALID"),
        (dict(exp=[NOW + 60]), "USER_TOKEN_INVALID"),
        (dict(exp=NOW - 10), "USER_TOKEN_EXPIRED"),
        (dict(iat=NOW + 3600, exp=NOW + 7200), "USER_TOKEN_INVALID"),  # issued in the future
        (dict(nbf=NOW + 7200), "USER_TOKEN_NOT_YET_VALID"),
        (dict(nbf=str(NOW)), "USER_TOKEN_INVALID"),
        (dict(sub=123), "USER_TOKEN_INVALID"),
        (dict(sub=""), "USER_TOKEN_INVALID"),
        (dict(sub=["ada"]), "USER_TOKEN_INVALID"),
        (dict(org_id=12345678901234567890123456789012), "USER_TOKEN_INVALID"),  # str() of it parses as a UUID
        (dict(org_id=[ORG]), "USER_TOKEN_INVALID"),
        (dict(org_id="not-a-uuid"), "USER_TOKEN_INVALID"),
    ],
)
def test_user_tokens_with_bad_lifetime_or_claim_types_are_refused(over: dict[str, Any], reason: str) -> None:
    verifier = UserTokenVerifier(USER_ISS, hs256_secret=SECRET)
    with pytest.raises(Unauthenticated) as exc:
        verifier.verify(user_token(**over))
    assert exc.value.reason == reason


def test_a_good_user_token_passes_and_nbf_in_the_past_is_fine() -> None:
    verifier = UserTokenVerifier(USER_ISS, hs256_secret=SECRET)
    assert verifier.verify(user_token()).org_id == ORG
    assert verifier.verify(user_token(nbf=NOW - 5, iat=float(NOW))).subject == "ada"


async def test_the_query_service_refuses_a_long_lived_user_token(settings: Settings, db: asyncpg.Connection) -> None:
    async with lab(settings, db) as lb:
        auth = lb.platform.settings.user_auth
        assert auth.hs256_secret is not None and auth.max_lifetime_seconds == 86_400
        forever = issue_user_token(
            auth.hs256_secret, issuer=auth.issuer, subject="ada", org_id=ORG, ttl_seconds=10 * 365 * 86_400
        )
        async with grpc.aio.insecure_channel(lb.platform.addr) as ch:
            got = await reason_of(ApiQueryClient(ch, token=forever).query("anything", COUNT))
        assert got == ("Unauthenticated", "USER_TOKEN_LIFETIME_TOO_LONG")


# Capability tokens: the same strictness, signed with the real key so only the claim is wrong.

ISS = "trace-dispatcher"
TASK = str(uuid.uuid4())
GRANT = DatasetGrant(str(uuid.uuid4()), str(uuid.uuid4()), StorageRef("s3", "datasets/a/v1/", "bucket"))


def _cap_payload(ring: KeyRing) -> dict[str, Any]:
    claims = CapabilityClaims(ORG, TASK, 1, (GRANT,), ("s3://bucket/datasets/a/v1/",), ("s3://scratch/t/1/",))
    return dict(jwt.decode(TokenIssuer(ISS, 300, ring).issue(claims), options={"verify_signature": False}))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(p: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        node: Any = p
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DROP:
            del node[leaf]
        else:
            node[leaf] = value

    return mutate


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (_set("exp", 253402300799), "CAPABILITY_TOKEN_LIFETIME_TOO_LONG"),
        (lambda p: p.update(exp=p["iat"] + 301), "CAPABILITY_TOKEN_LIFETIME_TOO_LONG"),  # beyond the TTL
        (_set("iat", str(NOW)), "CAPABILITY_TOKEN_INVALID"),
        (_set("iat", True), "CAPABILITY_TOKEN_INVALID"),
        (_set("iat", math.nan), "CAPABILITY_TOKEN_INVALID"),
        (_set("exp", str(NOW + 60)), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(nbf=p["iat"] + 120), "CAPABILITY_TOKEN_NOT_YET_VALID"),
        (_set("nbf", "0"), "CAPABILITY_TOKEN_INVALID"),
        (_set("task_id", TASK.upper()), "CAPABILITY_TOKEN_INVALID"),
        (_set("org_id", 12345678901234567890123456789012), "CAPABILITY_TOKEN_INVALID"),
        (_set("attempt", 1.0), "CAPABILITY_TOKEN_INVALID"),
        (_set("attempt", True), "CAPABILITY_TOKEN_INVALID"),
        (_set("jti", 7), "CAPABILITY_TOKEN_INVALID"),
        (_set("s3.read_prefixes", "s3://"), "CAPABILITY_TOKEN_INVALID"),  # would iterate as 's', '3', ...
        (_set("s3.write_prefixes", _DROP), "CAPABILITY_TOKEN_INVALID"),
        (_set("s3.write_prefixes", [7]), "CAPABILITY_TOKEN_INVALID"),
        (_set("datasets.0.storage_ref.bucket", 7), "CAPABILITY_TOKEN_INVALID"),
        (_set("datasets.0.storage_ref.glob", ["*"]), "CAPABILITY_TOKEN_INVALID"),
        (_set("datasets.0.dataset_uuid", 7), "CAPABILITY_TOKEN_INVALID"),
        (_set("datasets.0.extra", "x"), "CAPABILITY_TOKEN_INVALID"),
        (_set("datasets", [[1]]), "CAPABILITY_TOKEN_INVALID"),
    ],
)
async def test_capability_tokens_with_bad_lifetime_or_claim_types_are_refused(
    mutate: Callable[[dict[str, Any]], None], reason: str
) -> None:
    ring = KeyRing(current=SigningKey.generate())
    payload = _cap_payload(ring)
    mutate(payload)
    token = jwt.encode(payload, ring.current.private_key, "ES256", headers={"kid": ring.current.kid})

    async def fetch() -> dict[str, Any]:
        return ring.jwks()

    verifier = TokenVerifier(ISS, fetch_jwks=fetch, refresh_min_seconds=0.0, max_lifetime_seconds=300)
    with pytest.raises(Unauthenticated) as exc:
        await verifier.verify(token)
    assert exc.value.reason == reason


async def test_the_verified_cache_honours_exp_and_nbf_and_never_caches_without_an_expiry() -> None:
    ring = KeyRing(current=SigningKey.generate())
    fetches: list[int] = []

    async def fetch() -> dict[str, Any]:
        fetches.append(1)
        return ring.jwks()

    verifier = TokenVerifier(ISS, fetch_jwks=fetch, refresh_min_seconds=0.0, max_lifetime_seconds=300)
    payload = _cap_payload(ring)
    payload["nbf"] = payload["iat"]
    token = jwt.encode(payload, ring.current.private_key, "ES256", headers={"kid": ring.current.kid})
    now = float(payload["iat"])
    await verifier.verify(token, now=now + 1)
    await verifier.verify(token, now=now + 2)  # from the cache
    assert len(fetches) == 1
    with pytest.raises(Unauthenticated) as early:  # a clock stepping back before nbf
        await verifier.verify(token, now=now - 30)
    assert early.value.reason == "CAPABILITY_TOKEN_NOT_YET_VALID"
    with pytest.raises(Unauthenticated) as late:
        await verifier.verify(token, now=float(payload["exp"]))
    assert late.value.reason == "CAPABILITY_TOKEN_EXPIRED"
    # A remembered token without its issuer's expiry is not trusted from the cache.
    other = TokenIssuer(ISS, 300, KeyRing(current=SigningKey.generate())).issue(
        CapabilityClaims(ORG, TASK, 1, (GRANT,))
    )
    verifier.remember(other, CapabilityClaims(ORG, TASK, 1, (GRANT,)))
    with pytest.raises(Unauthenticated) as unknown:
        await verifier.verify(other)
    assert unknown.value.reason == "CAPABILITY_TOKEN_UNKNOWN_KEY"


# --- the UDF path ---------------------------------------------------------------------------
# A UDF holds the token it is started with (TRACE_TASK_CAPABILITY) and reaches the platform
# only through the invoker's byte bridge. The worker hands it the attempt's *current* token
# (OperatorContext.capability_token, renewed by heartbeats), so a UDF started after the
# claim's own token expired still works; the one it would have held without renewal fails.

TASK_QUERY_UDF = b"""
import os
import grpc
from trace_platform.gen.trace.v1 import query_pb2, query_pb2_grpc

def main(event, context):
    stub = query_pb2_grpc.QueryServiceStub(grpc.insecure_channel(os.environ["TRACE_TASK_ENDPOINT"]))
    md = (("x-trace-task-capability", os.environ["TRACE_TASK_CAPABILITY"]),)
    req = query_pb2.TaskQueryRequest(task_id=context.task_id, attempt=context.attempt,
                                     dataset_uuid=event["config"]["dataset"], sql="SELECT count(*) FROM dataset")
    try:
        return {"alerts": [], "count": stub.TaskQuery(req, metadata=md, timeout=20).rows[0].values[0].int_value}
    except grpc.RpcError as err:
        return {"alerts": [], "error": err.code().name}
"""


async def test_a_udf_started_after_the_claims_token_expired_works_with_the_current_token(
    settings: Settings, db: asyncpg.Connection
) -> None:
    key = Ed25519PrivateKey.generate()
    keys = settings.data_dir / "bundle_keys"
    keys.mkdir(parents=True, exist_ok=True)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (keys / "test.pub").write_bytes(pem)
    bundle = settings.data_dir / "bundles" / "query.zip"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    signed_zip(bundle, key, "python", "handler.main", {"handler.py": TASK_QUERY_UDF})
    invoker_settings = replace(
        settings.invoker, python=sys.executable, limits=replace(settings.invoker.limits, timeout_seconds=30.0)
    )
    async with lab(replace(settings, invoker=invoker_settings), db, ttl=4) as lb:
        ref, original = await lb.claim()
        await asyncio.sleep(max(0.0, exp_of(original) - 2.0 - time.time()) + 0.2)
        current = (await lb.client.renew(ref, original)).capability_token
        assert current is not None
        await sleep_past(original)

        async def run_udf(token: str) -> dict[str, Any]:
            lease = await lb.client.heartbeat(ref, current)
            result = await lb.platform.invoker.invoker.invoke(
                Invocation(
                    task_id=ref.task_id,
                    attempt=ref.attempt,
                    lease_token=ref.lease_token,
                    lease_expires_at=lease.astimezone(UTC),
                    capability_token=token,
                    bundle_url=f"file://{bundle}",
                    config={"dataset": lb.dataset.dataset_uuid},
                )
            )
            assert result.ok, result.stderr_tail
            return dict(json.loads(result.result_json))

        assert (await run_udf(current)).get("count") == N_ROWS
        assert (await run_udf(original)).get("error") == "UNAUTHENTICATED"
