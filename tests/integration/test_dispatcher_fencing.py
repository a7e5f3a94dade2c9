"""Claims, capability tokens and (task_id, attempt, lease_token) fencing, against a real
Dispatcher on a loopback port and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trace_platform.app import RunningPlatform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import Aborted, FailedPrecondition, PermissionDenied, Unauthenticated
from trace_platform.core.keys import KeyRing, KeyStore, SigningKey
from trace_platform.core.models import TaskRef
from trace_platform.core.tokens import CapabilityClaims, TokenIssuer
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2

from .conftest import ORG, claim_new

pb = dispatcher_pb2


async def test_duplicate_claims_do_not_double_run(client: DispatcherClient, db: asyncpg.Connection) -> None:
    task_id = await client.create_task(ORG, "noop")
    results = await asyncio.gather(*(client.claim(task_id, f"w{i}") for i in range(8)))
    claimed = [r for r in results if r.WhichOneof("result") == "claimed"]
    refused = [r for r in results if r.WhichOneof("result") == "not_claimed"]
    assert len(claimed) == 1
    assert len(refused) == 7
    assert {r.not_claimed.reason for r in refused} == {pb.NOT_CLAIMED_REASON_ALREADY_RUNNING}
    assert await db.fetchval("SELECT count(*) FROM task_attempts WHERE task_id = $1", uuid.UUID(task_id)) == 1


async def test_claim_refusals_name_their_reason(client: DispatcherClient) -> None:
    missing = await client.claim(str(uuid.uuid4()), "w")
    assert missing.not_claimed.reason == pb.NOT_CLAIMED_REASON_NOT_FOUND
    ref, cap = await claim_new(client)
    await client.complete(ref, cap)
    done = await client.claim(ref.task_id, "w2")
    assert done.not_claimed.reason == pb.NOT_CLAIMED_REASON_COMPLETED


async def test_worker_rpcs_require_the_worker_token(channel, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    admin = DispatcherClient(channel, admin_token=settings.admin_token)
    task_id = await admin.create_task(ORG, "noop")
    with pytest.raises(Unauthenticated) as missing:
        await admin.claim(task_id, "w")
    assert missing.value.reason == "CREDENTIAL_MISSING"
    wrong = DispatcherClient(channel, worker_token="not-the-token")
    with pytest.raises(PermissionDenied) as bad:
        await wrong.claim(task_id, "w")
    assert bad.value.reason == "CREDENTIAL_INVALID"
    # An admin token is not a worker token.
    as_worker = DispatcherClient(channel, worker_token=settings.admin_token)
    with pytest.raises(PermissionDenied):
        await as_worker.claim(task_id, "w")


async def test_capability_token_required(client: DispatcherClient) -> None:
    ref, _ = await claim_new(client)
    for call in (client.heartbeat(ref, ""), client.complete(ref, ""), client.buffer_publish(ref, "", "file:///x", 1)):
        with pytest.raises(Unauthenticated) as exc:
            await call
        assert exc.value.reason == "CAPABILITY_TOKEN_MISSING"


async def test_wrong_capability_token_rejected(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref_a, cap_a = await claim_new(client)
    _ref_b, cap_b = await claim_new(client)
    # B's token on A's task: a valid token, but not for this task.
    with pytest.raises(PermissionDenied) as mismatch:
        await client.complete(ref_a, cap_b)
    assert mismatch.value.reason == "TOKEN_TASK_MISMATCH"
    # Garbage and tampered tokens.
    with pytest.raises(Unauthenticated):
        await client.heartbeat(ref_a, "not.a.jwt")
    header, payload, sig = cap_a.split(".")
    tampered = f"{header}.{payload}.{sig[:-4]}AAAA"
    with pytest.raises(Unauthenticated) as bad_sig:
        await client.complete(ref_a, tampered)
    assert bad_sig.value.reason == "CAPABILITY_TOKEN_INVALID"
    # alg confusion: HS256 signed with the public JWK text must not pass.
    forged = jwt.encode(
        jwt.decode(cap_a, options={"verify_signature": False}),
        "s" * 32,
        "HS256",
        headers={"kid": jwt.get_unverified_header(cap_a)["kid"]},
    )
    with pytest.raises(Unauthenticated):
        await client.complete(ref_a, forged)
    status = await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(ref_a.task_id))
    assert status == "running"


async def test_token_for_other_attempt_rejected(client: DispatcherClient, platform: RunningPlatform) -> None:
    ref, _ = await claim_new(client)
    ring = KeyStore(platform.settings.tokens.key_dir).load()  # type: ignore[arg-type]
    issuer = TokenIssuer(platform.settings.tokens.issuer, 60, ring)
    other_attempt = issuer.issue(CapabilityClaims(org_id=ORG, task_id=ref.task_id, attempt=2))
    with pytest.raises(PermissionDenied) as exc:
        await client.heartbeat(ref, other_attempt)
    assert exc.value.reason == "TOKEN_TASK_MISMATCH"


async def test_expired_token_rejected(client: DispatcherClient, platform: RunningPlatform) -> None:
    ref, _ = await claim_new(client)
    ring = KeyStore(platform.settings.tokens.key_dir).load()  # type: ignore[arg-type]
    issuer = TokenIssuer(platform.settings.tokens.issuer, 10, ring)
    old = issuer.issue(CapabilityClaims(org_id=ORG, task_id=ref.task_id, attempt=1), now=time.time() - 3600)
    with pytest.raises(Unauthenticated) as exc:
        await client.heartbeat(ref, old)
    assert exc.value.reason == "CAPABILITY_TOKEN_EXPIRED"


async def test_next_key_accepted_during_overlap_and_unknown_key_refused(
    client: DispatcherClient, platform: RunningPlatform
) -> None:
    ref, _ = await claim_new(client)
    ring = KeyStore(platform.settings.tokens.key_dir).load()  # type: ignore[arg-type]
    assert ring.next is not None
    claims = CapabilityClaims(org_id=ORG, task_id=ref.task_id, attempt=1)
    iss = platform.settings.tokens.issuer
    # Signed by the *next* key, which the JWKS already publishes: accepted.
    next_signed = TokenIssuer(iss, 60, KeyRing(current=ring.next)).issue(claims)
    assert jwt.get_unverified_header(next_signed)["kid"] == ring.next.kid
    await client.heartbeat(ref, next_signed)
    # Signed by a key nobody published: refused even though the claims are right.
    stranger = TokenIssuer(iss, 60, KeyRing(current=SigningKey.generate())).issue(claims)
    with pytest.raises(Unauthenticated) as exc:
        await client.heartbeat(ref, stranger)
    assert exc.value.reason == "CAPABILITY_TOKEN_UNKNOWN_KEY"
    # Right key material but a foreign kid is refused too.
    forged_kid = TokenIssuer(iss, 60, KeyRing(current=SigningKey("k-unknown", ec.generate_private_key(ec.SECP256R1()))))
    with pytest.raises(Unauthenticated):
        await client.heartbeat(ref, forged_kid.issue(claims))


async def test_jwks_publishes_public_keys_only(client: DispatcherClient, platform: RunningPlatform) -> None:
    jwks = await client.jwks()
    ring = KeyStore(platform.settings.tokens.key_dir).load()  # type: ignore[arg-type]
    assert {k["kid"] for k in jwks["keys"]} == {ring.current.kid, ring.next.kid}  # type: ignore[union-attr]
    assert all("d" not in k and k["alg"] == "ES256" for k in jwks["keys"])


async def test_wrong_lease_token_rejected(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref, cap = await claim_new(client)
    wrong = TaskRef(ref.task_id, ref.attempt, str(uuid.uuid4()))
    before = await db.fetchrow("SELECT status, lease_expires_at FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
    for call in (
        client.heartbeat(wrong, cap),
        client.complete(wrong, cap),
        client.emit_events(
            wrong, cap, [common_pb2.DatasetEvent(dataset_uuid=str(uuid.uuid4()), dataset_version=str(uuid.uuid4()))]
        ),
    ):
        with pytest.raises(Aborted) as exc:
            await call
        assert exc.value.reason == "LEASE_MISMATCH"
    after = await db.fetchrow("SELECT status, lease_expires_at FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
    assert after == before
    assert await db.fetchval("SELECT count(*) FROM task_events") == 0


async def _fail_and_reclaim(client: DispatcherClient, db: asyncpg.Connection) -> tuple[TaskRef, str, TaskRef, str]:
    old_ref, old_cap = await claim_new(client)
    await client.complete(old_ref, old_cap, pb.COMPLETION_STATUS_FAILED, error_message="boom")

    async def requeued() -> bool:
        return await db.fetchval("SELECT status FROM tasks WHERE id = $1", uuid.UUID(old_ref.task_id)) == "queued"

    from tests.conftest import eventually

    await eventually(requeued)
    resp = await client.claim(old_ref.task_id, "w-second")
    assert resp.claimed.attempt == 2
    return old_ref, old_cap, TaskRef(old_ref.task_id, 2, resp.claimed.lease_token), resp.claimed.capability_token


async def test_stale_attempt_fencing_rejects_old_complete(client: DispatcherClient, db: asyncpg.Connection) -> None:
    old_ref, old_cap, new_ref, new_cap = await _fail_and_reclaim(client, db)
    with pytest.raises(Aborted) as exc:
        await client.complete(old_ref, old_cap)
    assert exc.value.reason == "STALE_ATTEMPT"
    row = await db.fetchrow("SELECT status, attempt FROM tasks WHERE id = $1", uuid.UUID(old_ref.task_id))
    assert (row["status"], row["attempt"]) == ("running", 2)
    # The old attempt's token cannot be combined with the new lease either.
    with pytest.raises(PermissionDenied):
        await client.complete(new_ref, old_cap)
    await client.complete(new_ref, new_cap)


async def test_stale_attempt_fencing_rejects_old_buffer_publish(
    client: DispatcherClient, db: asyncpg.Connection, platform: RunningPlatform
) -> None:
    old_ref, old_cap, _, _ = await _fail_and_reclaim(client, db)
    uri = f"{platform.settings.scratch_uri}/{old_ref.task_id}/1/batch.jsonl"
    with pytest.raises(Aborted) as exc:
        await client.buffer_publish(old_ref, old_cap, uri, 10)
    assert exc.value.reason == "STALE_ATTEMPT"
    assert await db.fetchval("SELECT count(*) FROM buffered_publishes") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'enqueue_buffer'") == 0


async def test_buffer_publish_is_idempotent_for_same_attempt_and_uri(
    client: DispatcherClient, db: asyncpg.Connection, platform: RunningPlatform
) -> None:
    ref, cap = await claim_new(client)
    uri = f"{platform.settings.scratch_uri}/{ref.task_id}/1/batch.jsonl"
    first = await client.buffer_publish(ref, cap, uri, 123)
    second = await client.buffer_publish(ref, cap, uri, 123)
    assert (first.duplicate, second.duplicate) == (False, True)
    assert first.publish_id == second.publish_id
    assert await db.fetchval("SELECT count(*) FROM buffered_publishes") == 1
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE kind = 'enqueue_buffer'") == 1
    # A different batch of the same attempt is a new publish.
    other = await client.buffer_publish(ref, cap, uri.replace("batch", "batch2"), 5)
    assert not other.duplicate
    # Publishing outside the attempt's write prefix is refused.
    with pytest.raises(PermissionDenied) as exc:
        await client.buffer_publish(ref, cap, f"{platform.settings.scratch_uri}/{uuid.uuid4()}/1/x.jsonl", 5)
    assert exc.value.reason == "BATCH_URI_NOT_GRANTED"


async def test_completion_is_idempotent_and_final(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref, cap = await claim_new(client)
    first = await client.complete(ref, cap)
    again = await client.complete(ref, cap)
    assert (first.duplicate, again.duplicate) == (False, True)
    with pytest.raises(FailedPrecondition) as exc:
        await client.complete(ref, cap, pb.COMPLETION_STATUS_FAILED)
    assert exc.value.reason == "ALREADY_FINISHED"
    with pytest.raises(FailedPrecondition):
        await client.heartbeat(ref, cap)
    outcomes = await db.fetch("SELECT outcome FROM task_attempts WHERE task_id = $1", uuid.UUID(ref.task_id))
    assert [r["outcome"] for r in outcomes] == ["completed"]


async def test_heartbeat_extends_the_lease(client: DispatcherClient, db: asyncpg.Connection) -> None:
    ref, cap = await claim_new(client)
    before = await db.fetchval("SELECT lease_expires_at FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
    await asyncio.sleep(0.05)
    expires = await client.heartbeat(ref, cap)
    after = await db.fetchval("SELECT lease_expires_at FROM tasks WHERE id = $1", uuid.UUID(ref.task_id))
    assert after > before
    assert abs((after - expires).total_seconds()) < 0.001
