"""Task capability tokens: issue (Dispatcher) and verify (every task-scoped verifier).

Deny by default: a token is accepted only with a known ``kid``, the configured
algorithm, ``aud=trace.task``, our issuer, an unexpired ``exp``, ``sub`` equal to
``task:{task_id}`` and well-formed custom claims.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm

from trace_platform.core.errors import InvalidArgument, PermissionDenied, Unauthenticated
from trace_platform.core.keys import ES256, HS256, KeyRing
from trace_platform.core.models import DatasetGrant

AUDIENCE = "trace.task"
DEV_HS256_KID = "dev-hs256"


@dataclass(frozen=True)
class CapabilityClaims:
    org_id: str
    task_id: str
    attempt: int
    datasets: tuple[DatasetGrant, ...] = ()
    s3_read_prefixes: tuple[str, ...] = ()
    s3_write_prefixes: tuple[str, ...] = ()
    expires_at: float = 0.0

    def grant_for(self, dataset_uuid: str) -> DatasetGrant | None:
        return next((g for g in self.datasets if g.dataset_uuid == dataset_uuid), None)

    def bind(self, task_id: str, attempt: int) -> None:
        """The request's ``{task_id, attempt}`` must be the token's."""
        if task_id != self.task_id or attempt != self.attempt:
            raise PermissionDenied("TOKEN_TASK_MISMATCH", "token does not match task or attempt")


@dataclass
class TokenIssuer:
    issuer: str
    ttl_seconds: int
    ring: KeyRing | None = None
    dev_hs256_secret: str | None = None

    def issue(self, claims: CapabilityClaims, now: float | None = None) -> str:
        return self.issue_with_expiry(claims, now)[0]

    def issue_with_expiry(self, claims: CapabilityClaims, now: float | None = None) -> tuple[str, float]:
        now = time.time() if now is None else now
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": f"task:{claims.task_id}",
            "iat": int(now),
            "exp": int(now + self.ttl_seconds),
            "jti": uuid.uuid4().hex,
            "org_id": claims.org_id,
            "task_id": claims.task_id,
            "attempt": claims.attempt,
            "datasets": [g.to_claim() for g in claims.datasets],
            "s3": {
                "read_prefixes": list(claims.s3_read_prefixes),
                "write_prefixes": list(claims.s3_write_prefixes),
            },
        }
        if self.dev_hs256_secret:
            token = jwt.encode(payload, self.dev_hs256_secret, HS256, headers={"kid": DEV_HS256_KID})
        elif self.ring is None:
            raise RuntimeError("no signing key configured")
        else:
            key = self.ring.current
            token = jwt.encode(payload, key.private_key, ES256, headers={"kid": key.kid})
        return token, float(payload["exp"])


JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


def read_header(token: str, reason_prefix: str) -> dict[str, Any]:
    """The unverified JOSE header (to pick the key); ``<prefix>_INVALID`` if malformed."""
    try:
        return dict(jwt.get_unverified_header(token))
    except jwt.PyJWTError:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "malformed token") from None


def decode_token(token: str, key: Any, alg: str, audience: str, issuer: str, reason_prefix: str) -> dict[str, Any]:
    """Signature, algorithm, audience, issuer, expiry and the required claims, checked;
    failures are UNAUTHENTICATED ``<prefix>_EXPIRED`` or ``<prefix>_INVALID``."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=[alg], audience=audience, issuer=issuer, options={"require": _REQUIRED_CLAIMS}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated(f"{reason_prefix}_EXPIRED", "token expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "token rejected") from None
    return payload


@dataclass
class TokenVerifier:
    """Verifies capability tokens against a cached JWKS, refreshed on an unknown kid."""

    issuer: str
    fetch_jwks: JwksFetcher | None = None
    dev_hs256_secret: str | None = None
    refresh_min_seconds: float = 1.0
    cache_seconds: float = 300.0
    _keys: dict[str, Any] = field(default_factory=dict)
    _fetched_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _verified: OrderedDict[str, CapabilityClaims] = field(default_factory=OrderedDict)

    def remember(self, token: str, claims: CapabilityClaims) -> None:
        """Trust a token this process just minted (skips re-verifying our own signature)."""
        self._cache(token, claims)

    def _cache(self, token: str, claims: CapabilityClaims) -> None:
        self._verified[token] = claims
        if len(self._verified) > 4096:
            self._verified.popitem(last=False)

    async def verify(self, token: str | None, now: float | None = None) -> CapabilityClaims:
        if not token:
            raise Unauthenticated("CAPABILITY_TOKEN_MISSING", "task capability token required")
        now = time.time() if now is None else now
        cached = self._verified.get(token)
        if cached is not None and cached.expires_at > now:
            return cached
        claims = await self._verify_uncached(token, now)
        self._cache(token, claims)
        return claims

    async def _verify_uncached(self, token: str, now: float) -> CapabilityClaims:
        header = read_header(token, "CAPABILITY_TOKEN")
        kid, alg = header.get("kid"), header.get("alg")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("CAPABILITY_TOKEN_INVALID", "token has no kid")
        if self.dev_hs256_secret:
            if alg != HS256 or kid != DEV_HS256_KID:
                raise Unauthenticated("CAPABILITY_TOKEN_INVALID", "unexpected algorithm")
            key: Any = self.dev_hs256_secret
        else:
            if alg != ES256:
                raise Unauthenticated("CAPABILITY_TOKEN_INVALID", "unexpected algorithm")
            key = await self._key_for(kid, now)
        payload = decode_token(token, key, alg, AUDIENCE, self.issuer, "CAPABILITY_TOKEN")
        return _claims_from_payload(payload)

    async def _key_for(self, kid: str, now: float) -> Any:
        stale = now - self._fetched_at > self.cache_seconds
        if kid not in self._keys or stale:
            async with self._lock:
                may_refresh = now - self._fetched_at >= self.refresh_min_seconds
                if (kid not in self._keys and may_refresh) or stale:
                    await self._refresh(now)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("CAPABILITY_TOKEN_UNKNOWN_KEY", "token signed by an unknown key")
        return key

    async def _refresh(self, now: float) -> None:
        if self.fetch_jwks is None:
            return
        jwks = await self.fetch_jwks()
        keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("kid"):
                keys[jwk["kid"]] = ECAlgorithm.from_jwk(jwk)
        self._keys = keys
        self._fetched_at = now


def _claims_from_payload(payload: dict[str, Any]) -> CapabilityClaims:
    def bad(what: str) -> Unauthenticated:
        return Unauthenticated("CAPABILITY_TOKEN_INVALID", f"bad claim: {what}")

    task_id, org_id, attempt = payload.get("task_id"), payload.get("org_id"), payload.get("attempt")
    try:
        uuid.UUID(str(task_id))
        uuid.UUID(str(org_id))
    except ValueError:
        raise bad("task_id/org_id") from None
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise bad("attempt")
    if payload.get("sub") != f"task:{task_id}":
        raise bad("sub")
    datasets_raw = payload.get("datasets")
    s3 = payload.get("s3")
    if not isinstance(datasets_raw, list) or not isinstance(s3, dict):
        raise bad("datasets/s3")
    try:
        datasets = tuple(DatasetGrant.from_claim(d) for d in datasets_raw)
    except (KeyError, TypeError, ValueError, InvalidArgument):
        raise bad("datasets") from None
    reads, writes = s3.get("read_prefixes", []), s3.get("write_prefixes", [])
    if not all(isinstance(p, str) for p in [*reads, *writes]):
        raise bad("s3")
    return CapabilityClaims(
        org_id=str(org_id),
        task_id=str(task_id),
        attempt=attempt,
        datasets=datasets,
        s3_read_prefixes=tuple(reads),
        s3_write_prefixes=tuple(writes),
        expires_at=float(payload["exp"]),
    )
