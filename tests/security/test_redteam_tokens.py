"""Red-team variants of issue 13's token wall (hole 5): forged, confused and oversized
tokens, against the real verifiers with a real ES256 key ring and a real Dispatcher.

- Algorithm confusion (HS256 keyed with the ES256 public key, ``alg: none``, a lower-case
  ``es256``), a ``kid`` naming a path, a payload altered after signing, a ``crit`` header:
  all UNAUTHENTICATED.
- Size: PyJWT checks each character of a token in a Python loop before any signature
  check, and a CompleteTasks/HeartbeatTasks item carries its token in the message body
  (no gRPC metadata limit, no worker secret): one 15 MiB item held the Dispatcher's event
  loop ~2 s. A token over ``MAX_TOKEN_CHARS`` is refused before it is parsed at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from tests.integration.conftest import claim_new
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.core.errors import Unauthenticated
from trace_platform.core.keys import KeyRing, SigningKey
from trace_platform.core.tokens import MAX_TOKEN_CHARS, CapabilityClaims, TokenIssuer, TokenVerifier
from trace_platform.core.user_tokens import UserTokenVerifier, issue_user_token
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2, dispatcher_pb2_grpc

RING = KeyRing(SigningKey.generate())


async def _jwks() -> dict[str, Any]:
    return RING.jwks()


def _verifier() -> TokenVerifier:
    return TokenVerifier("trace", fetch_jwks=_jwks, max_lifetime_seconds=300)


def _good() -> str:
    claims = CapabilityClaims(org_id=str(uuid.uuid4()), task_id=str(uuid.uuid4()), attempt=1)
    return TokenIssuer("trace", 300, RING).issue(claims)


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _forgeries() -> dict[str, str]:
    good = _good()
    head, body, sig = good.split(".")
    kid = RING.current.kid
    payload = jwt.decode(good, options={"verify_signature": False})
    public = RING.current.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_head = _b64({"alg": "HS256", "kid": kid, "typ": "JWT"})
    hs_sig = hmac.new(public, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
    altered = _b64({**payload, "org_id": str(uuid.uuid4())})
    return {
        "hs256 keyed with the public key": f"{hs_head}.{body}.{base64.urlsafe_b64encode(hs_sig).rstrip(b'=').decode()}",
        "alg none": f"{_b64({'alg': 'none', 'kid': kid})}.{body}.",
        "lower-case alg": f"{_b64({'alg': 'es256', 'kid': kid})}.{body}.{sig}",
        "kid path": f"{_b64({'alg': 'ES256', 'kid': '../../etc/passwd'})}.{body}.{sig}",
        "payload altered": f"{head}.{altered}.{sig}",
        "crit header": jwt.encode(payload, RING.current.private_key, "ES256", headers={"kid": kid, "crit": ["exp"]}),
    }


@pytest.mark.parametrize("name", sorted(_forgeries()))
async def test_forged_capability_tokens_are_refused(name: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await _verifier().verify(_forgeries()[name])
    assert refused.value.reason.startswith("CAPABILITY_TOKEN_"), name


def _oversized(token: str) -> str:
    head, body, sig = token.split(".")
    return f"{head}.{body}.{sig}{'A' * (MAX_TOKEN_CHARS + 4 - len(token))}"


async def test_an_oversized_capability_token_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _oversized(_good())
    assert len(token) == MAX_TOKEN_CHARS + 4

    def parsed(*args: object, **kwargs: object) -> None:
        raise AssertionError("an oversized token reached the JWT parser")

    monkeypatch.setattr(jwt, "get_unverified_header", parsed)
    monkeypatch.setattr(jwt, "decode", parsed)
    with pytest.raises(Unauthenticated) as refused:
        await _verifier().verify(token)
    assert refused.value.reason == "CAPABILITY_TOKEN_INVALID"


def test_an_oversized_user_token_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _oversized(issue_user_token("s" * 32, issuer="trace", subject="ada", org_id=str(uuid.uuid4())))

    def parsed(*args: object, **kwargs: object) -> None:
        raise AssertionError("an oversized token reached the JWT parser")

    monkeypatch.setattr(jwt, "get_unverified_header", parsed)
    monkeypatch.setattr(jwt, "decode", parsed)
    with pytest.raises(Unauthenticated) as refused:
        UserTokenVerifier(issuer="trace", hs256_secret="s" * 32).verify(token)
    assert refused.value.reason == "USER_TOKEN_INVALID"


async def test_a_token_at_the_cap_is_still_verified() -> None:
    good = _good()
    assert len(good) < MAX_TOKEN_CHARS // 4  # issued tokens sit far below the cap
    assert (await _verifier().verify(good)).attempt == 1


@pytest.mark.integration
async def test_a_huge_token_in_a_batch_item_is_refused_unparsed(
    served: grpc.aio.Channel, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real Dispatcher (in this process): HeartbeatTasks needs no worker
    secret, only each item's token; a 15 MiB one is CAPABILITY_TOKEN_INVALID without
    reaching the JWT parser (whose per-character loop took ~2 s of the event loop)."""
    channel = served
    client = DispatcherClient(channel, worker_token=settings.worker_token, admin_token=settings.admin_token)
    ref, cap = await claim_new(client)
    head, body, sig = cap.split(".")
    huge = f"{head}.{body}.{sig}{'A' * (15 << 20)}"
    real_header = jwt.get_unverified_header

    def header(token: str) -> dict[str, Any]:
        assert len(token) <= MAX_TOKEN_CHARS, "an oversized token reached the JWT parser"
        return dict(real_header(token))

    monkeypatch.setattr(jwt, "get_unverified_header", header)
    task = common_pb2.TaskRef(task_id=ref.task_id, attempt=ref.attempt, lease_token=ref.lease_token)
    items = [
        dispatcher_pb2.HeartbeatItem(request=dispatcher_pb2.HeartbeatRequest(task=task), capability_token=token)
        for token in (huge, cap)
    ]
    stub = dispatcher_pb2_grpc.DispatcherServiceStub(channel)
    resp = await stub.HeartbeatTasks(dispatcher_pb2.HeartbeatTasksRequest(items=items))
    assert resp.results[0].WhichOneof("result") == "error", resp
    assert resp.results[0].error.reason == "CAPABILITY_TOKEN_INVALID", resp.results[0]
    assert resp.results[1].WhichOneof("result") == "ok", resp.results[1]  # the real one still works
