"""Capability tokens and key rings: pure logic, no servers."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest

from trace_platform.core.errors import PermissionDenied, Unauthenticated
from trace_platform.core.keys import KeyRing, KeyStore, SigningKey
from trace_platform.core.models import DatasetGrant, StorageRef
from trace_platform.core.tokens import AUDIENCE, CapabilityClaims, TokenIssuer, TokenVerifier

ISS = "trace-dispatcher"
TASK = str(uuid.uuid4())
ORG = str(uuid.uuid4())
GRANT = DatasetGrant(str(uuid.uuid4()), str(uuid.uuid4()), StorageRef("s3", "datasets/a/v1/", "bucket"))


def ring_verifier(ring: KeyRing, fetches: list[int] | None = None) -> TokenVerifier:
    async def fetch() -> dict[str, Any]:
        if fetches is not None:
            fetches.append(1)
        return ring.jwks()

    return TokenVerifier(ISS, fetch_jwks=fetch, refresh_min_seconds=0.0)


def claims(**over: Any) -> CapabilityClaims:
    base: dict[str, Any] = dict(org_id=ORG, task_id=TASK, attempt=1, datasets=(GRANT,), s3_read_prefixes=("s3://b/p/",))
    base.update(over)
    return CapabilityClaims(**base)


async def test_es256_round_trip_carries_every_claim() -> None:
    ring = KeyRing(current=SigningKey.generate())
    token = TokenIssuer(ISS, 60, ring).issue(claims())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == ring.current.kid
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["aud"] == AUDIENCE and payload["sub"] == f"task:{TASK}" and payload["iss"] == ISS
    assert {"exp", "iat", "org_id", "task_id", "attempt", "datasets", "s3"} <= payload.keys()
    got = await ring_verifier(ring).verify(token)
    assert got.datasets == (GRANT,) and got.s3_read_prefixes == ("s3://b/p/",) and got.attempt == 1
    got.bind(TASK, 1)
    with pytest.raises(PermissionDenied):
        got.bind(TASK, 2)
    with pytest.raises(PermissionDenied):
        got.bind(str(uuid.uuid4()), 1)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda p: p.update(aud="other"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(iss="someone-else"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(exp=int(time.time()) - 10), "CAPABILITY_TOKEN_EXPIRED"),
        (lambda p: p.pop("exp"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.pop("iat"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(sub="task:someone-else"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(attempt=0), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(attempt="1"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(org_id="nope"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.pop("datasets"), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.update(datasets=[{"dataset_uuid": "x"}]), "CAPABILITY_TOKEN_INVALID"),
        (lambda p: p.pop("s3"), "CAPABILITY_TOKEN_INVALID"),
    ],
)
async def test_missing_or_malformed_claims_are_refused(mutate: Any, reason: str) -> None:
    ring = KeyRing(current=SigningKey.generate())
    payload = jwt.decode(TokenIssuer(ISS, 60, ring).issue(claims()), options={"verify_signature": False})
    mutate(payload)
    token = jwt.encode(payload, ring.current.private_key, "ES256", headers={"kid": ring.current.kid})
    with pytest.raises(Unauthenticated) as exc:
        await ring_verifier(ring).verify(token)
    assert exc.value.reason == reason


async def test_alg_none_and_missing_kid_are_refused() -> None:
    ring = KeyRing(current=SigningKey.generate())
    payload = jwt.decode(TokenIssuer(ISS, 60, ring).issue(claims()), options={"verify_signature": False})
    unsigned = jwt.encode(payload, None, "none", headers={"kid": ring.current.kid})  # type: ignore[arg-type]
    no_kid = jwt.encode(payload, ring.current.private_key, "ES256")
    for token in (unsigned, no_kid, "", "a.b.c"):
        with pytest.raises(Unauthenticated):
            await ring_verifier(ring).verify(token)


async def test_unknown_kid_refreshes_jwks_once_then_refuses() -> None:
    ring = KeyRing(current=SigningKey.generate())
    fetches: list[int] = []
    verifier = ring_verifier(ring, fetches)
    await verifier.verify(TokenIssuer(ISS, 60, ring).issue(claims()))
    assert len(fetches) == 1
    # A key added after the first fetch is found by refreshing on the unknown kid.
    ring.next = SigningKey.generate()
    await verifier.verify(TokenIssuer(ISS, 60, KeyRing(current=ring.next)).issue(claims()))
    assert len(fetches) == 2
    stranger = TokenIssuer(ISS, 60, KeyRing(current=SigningKey.generate())).issue(claims())
    with pytest.raises(Unauthenticated) as exc:
        await verifier.verify(stranger)
    assert exc.value.reason == "CAPABILITY_TOKEN_UNKNOWN_KEY"


async def test_unknown_kid_refresh_is_rate_limited() -> None:
    ring = KeyRing(current=SigningKey.generate())
    fetches: list[int] = []

    async def fetch() -> dict[str, Any]:
        fetches.append(1)
        return ring.jwks()

    verifier = TokenVerifier(ISS, fetch_jwks=fetch, refresh_min_seconds=60.0)
    await verifier.verify(TokenIssuer(ISS, 60, ring).issue(claims()))
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await verifier.verify(TokenIssuer(ISS, 60, KeyRing(current=SigningKey.generate())).issue(claims()))
    assert len(fetches) == 1


async def test_rotation_keeps_old_key_valid_for_the_overlap_only() -> None:
    ring = KeyRing(current=SigningKey.generate(), next=SigningKey.generate())
    old_token = TokenIssuer(ISS, 600, ring).issue(claims())
    old_kid, next_kid = ring.current.kid, ring.next.kid  # type: ignore[union-attr]
    ring.rotate(overlap_seconds=300)
    assert ring.current.kid == next_kid and ring.next is not None
    assert old_kid in {k["kid"] for k in ring.jwks()["keys"]}
    await ring_verifier(ring).verify(old_token)
    # After the overlap the old key leaves the JWKS and its tokens stop verifying.
    later = time.time() + 301
    assert old_kid not in {k["kid"] for k in ring.jwks(now=later)["keys"]}
    future_ring_jwks = ring.jwks(now=later)

    async def fetch() -> dict[str, Any]:
        return future_ring_jwks

    with pytest.raises(Unauthenticated):
        await TokenVerifier(ISS, fetch_jwks=fetch).verify(old_token)


async def test_hs256_only_when_explicitly_configured() -> None:
    secret = "d" * 32
    token = TokenIssuer(ISS, 60, None, dev_hs256_secret=secret).issue(claims())
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert (await TokenVerifier(ISS, dev_hs256_secret=secret).verify(token)).task_id == TASK
    ring = KeyRing(current=SigningKey.generate())
    with pytest.raises(Unauthenticated):  # an ES256 verifier never accepts HS256
        await ring_verifier(ring).verify(token)
    with pytest.raises(Unauthenticated):  # and the dev verifier never accepts ES256
        await TokenVerifier(ISS, dev_hs256_secret=secret).verify(TokenIssuer(ISS, 60, ring).issue(claims()))


def test_key_store_round_trip_with_private_permissions(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys")
    ring = store.load_or_create()
    ring.rotate(60)
    store.save(ring)
    again = store.load()
    assert again.current.kid == ring.current.kid
    assert [k.kid for k, _ in again.previous] == [k.kid for k, _ in ring.previous]
    assert oct(os.stat(tmp_path / "keys").st_mode & 0o777) == "0o700"
    for pem in (tmp_path / "keys").glob("*.pem"):
        assert oct(pem.stat().st_mode & 0o777) == "0o600"
