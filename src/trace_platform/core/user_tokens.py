"""User Bearer JWTs for the user-facing Query API.

Lite signs user tokens with a generated HS256 secret (as the reference's Lite does).
A deployment instead points the verifier at the identity provider's public keys (a
JWKS document, ES256 or RS256). Deny by default: the algorithm is pinned by the
configured key type, and ``iss``, ``aud``, ``sub``, ``exp``, ``iat`` and ``org_id``
are all required, each of its exact type (``tokens.check_times`` for the time claims:
numbers only, ``nbf`` honoured, and ``exp - iat`` at most ``max_lifetime_seconds``).
Nothing is cached: every call verifies the token in full.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from trace_platform.core.errors import Unauthenticated
from trace_platform.core.keys import ES256, HS256
from trace_platform.core.tokens import decode_token, read_header

USER_AUDIENCE = "trace.user"
RS256 = "RS256"


@dataclass(frozen=True)
class UserClaims:
    subject: str
    org_id: str
    expires_at: float


def issue_user_token(
    secret: str, *, issuer: str, subject: str, org_id: str, ttl_seconds: int = 86_400, now: float | None = None
) -> str:
    """HS256 user token (Lite and tests). Production tokens come from the identity provider."""
    now = time.time() if now is None else now
    payload = {
        "iss": issuer,
        "aud": USER_AUDIENCE,
        "sub": subject,
        "org_id": org_id,
        "iat": int(now),
        "exp": int(now + ttl_seconds),
    }
    return jwt.encode(payload, secret, HS256, headers={"kid": "lite-user"})


def load_jwks_keys(path: Path) -> dict[str, tuple[str, Any]]:
    """kid -> (algorithm, public key) from a JWKS file; EC P-256 and RSA keys only."""
    keys: dict[str, tuple[str, Any]] = {}
    for jwk in json.loads(path.read_text()).get("keys", []):
        kid = jwk.get("kid")
        if not kid:
            continue
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            keys[kid] = (ES256, ECAlgorithm.from_jwk(jwk))
        elif jwk.get("kty") == "RSA":
            keys[kid] = (RS256, RSAAlgorithm.from_jwk(jwk))
    return keys


@dataclass
class UserTokenVerifier:
    issuer: str
    hs256_secret: str | None = None
    public_keys: dict[str, tuple[str, Any]] = field(default_factory=dict)
    max_lifetime_seconds: float = 86_400.0

    def verify(self, token: str | None, now: float | None = None) -> UserClaims:
        if not token:
            raise Unauthenticated("USER_TOKEN_MISSING", "authorization: Bearer <token> required")
        header = read_header(token, "USER_TOKEN")
        alg, kid = header.get("alg"), header.get("kid")
        key: Any
        if self.hs256_secret and alg == HS256:
            key = self.hs256_secret
        elif isinstance(kid, str) and kid in self.public_keys and self.public_keys[kid][0] == alg:
            key = self.public_keys[kid][1]
        else:
            raise Unauthenticated("USER_TOKEN_INVALID", "token algorithm or key not accepted")
        payload = decode_token(
            token, key, str(alg), USER_AUDIENCE, self.issuer, "USER_TOKEN", self.max_lifetime_seconds, now
        )
        org_id, sub = payload.get("org_id"), payload.get("sub")
        if not isinstance(org_id, str):  # an int of 32 digits would pass uuid.UUID(str(...))
            raise Unauthenticated("USER_TOKEN_INVALID", "bad claim: org_id")
        try:
            org = str(uuid.UUID(org_id))
        except ValueError:
            raise Unauthenticated("USER_TOKEN_INVALID", "bad claim: org_id") from None
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 256 or not sub.isprintable():
            raise Unauthenticated("USER_TOKEN_INVALID", "bad claim: sub")
        return UserClaims(subject=sub, org_id=org, expires_at=float(payload["exp"]))
