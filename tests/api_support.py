"""Users of the public API for tests: a real org, user and membership in PostgreSQL,
and a user token for them signed with the test settings' HS256 secret."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import jwt

from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.core.config import Settings
from trace_platform.core.metadata import AUTHORIZATION
from trace_platform.core.user_tokens import USER_AUDIENCE, issue_user_token


@dataclass(frozen=True)
class ApiUser:
    org_id: str
    user_id: str
    subject: str
    token: str

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return bearer(self.token)


def bearer(token: str) -> list[tuple[str, str]]:
    return [(AUTHORIZATION, f"Bearer {token}")]


async def make_user(
    pool: asyncpg.Pool, settings: Settings, role: str = "admin", org_id: str | None = None, subject: str | None = None
) -> ApiUser:
    """A member of ``org_id`` (a new org when None) with ``role``, and their token."""
    org_id = org_id or str(uuid.uuid4())
    subject = subject or f"user-{uuid.uuid4().hex[:10]}"
    user_id = await IdentityRepository(pool).ensure_member(org_id, f"org-{org_id[:8]}", subject, role)
    return ApiUser(org_id, user_id, subject, user_token(settings, subject, org_id))


def user_token(settings: Settings, subject: str, org_id: str, ttl_seconds: int = 3600) -> str:
    secret = settings.user_auth.hs256_secret
    assert secret is not None
    return issue_user_token(
        secret, issuer=settings.user_auth.issuer, subject=subject, org_id=org_id, ttl_seconds=ttl_seconds
    )


def bad_tokens(settings: Settings, user: ApiUser) -> dict[str, str | None]:
    """Every way a credential must be refused with UNAUTHENTICATED: missing, signed with
    another key, expired, for another audience, from another issuer."""
    secret = settings.user_auth.hs256_secret
    assert secret is not None
    now = int(time.time())
    claims = {"iss": settings.user_auth.issuer, "aud": USER_AUDIENCE, "sub": user.subject, "org_id": user.org_id}
    return {
        "missing": None,
        "bad_signature": jwt.encode({**claims, "iat": now, "exp": now + 600}, "x" * 32, "HS256"),
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, secret, "HS256"),
        "wrong_audience": jwt.encode({**claims, "aud": "trace.task", "iat": now, "exp": now + 600}, secret, "HS256"),
        "wrong_issuer": jwt.encode({**claims, "iss": "elsewhere", "iat": now, "exp": now + 600}, secret, "HS256"),
    }


def public_rpcs() -> set[str]:
    """Every RPC of the public API (``trace.api.v1``), as ``service/Method``."""
    import importlib
    import pkgutil

    from trace_platform.gen.trace.api import v1 as api_v1

    found = set()
    for info in pkgutil.iter_modules(api_v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{api_v1.__name__}.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                found |= {f"{service.full_name}/{m.name}" for m in service.methods}
    return found


@dataclass(frozen=True)
class TestIdentityProvider:
    """An ES256 identity provider: its JWKS file (what a deployment's
    TRACE_USER_AUTH_JWKS_PATH names) and a signer of user tokens with its private key."""

    __test__ = False  # not a test class
    jwks_path: Path
    issuer: str
    _key: Any

    @staticmethod
    def create(directory: Path, issuer: str = "https://idp.test/") -> TestIdentityProvider:
        import json

        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm

        key = ec.generate_private_key(ec.SECP256R1())
        jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "test-idp", "alg": "ES256", "use": "sig"}
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "jwks.json"
        path.write_text(json.dumps({"keys": [jwk]}))
        return TestIdentityProvider(path, issuer, key)

    def token(self, subject: str, org_id: str, ttl_seconds: int = 3600) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": USER_AUDIENCE,
            "sub": subject,
            "org_id": org_id,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self._key, "ES256", headers={"kid": "test-idp"})
