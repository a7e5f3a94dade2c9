"""Task capability tokens: issue (Dispatcher) and verify (every task-scoped verifier).

Deny by default: a token is accepted only with a known ``kid``, the configured
algorithm, ``aud=trace.task``, our issuer, ``iat``/``exp`` (and ``nbf`` if present) of
the right type with ``nbf <= now < exp`` and a lifetime within the verifier's maximum,
``sub`` equal to ``task:{task_id}`` and well-formed custom claims of exactly the right
types. A token verified once is served from a cache only inside that same validity
window: the cache never outlives ``exp``.

A valid signature is not enough to act: the attempt the token names must still be the
task's current, running attempt (``servers/query`` checks it per TaskQuery; the
Dispatcher's task RPCs are fenced by the lease in SQL).
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
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
    not_before: float = 0.0

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
        token, issued = self.issue_claims(claims, now)
        return token, issued.expires_at

    def issue_claims(self, claims: CapabilityClaims, now: float | None = None) -> tuple[str, CapabilityClaims]:
        """The token and its claims exactly as a verifier will read them (``iat``, ``exp``)."""
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
        return token, replace(claims, expires_at=float(payload["exp"]), not_before=float(payload["iat"]))

    def needs_renewal(self, claims: CapabilityClaims, now: float | None = None) -> bool:
        """A token is renewed (on heartbeat) once less than half its TTL is left: a worker
        heartbeating every few seconds always holds a token with at least ~TTL/2 to live."""
        now = time.time() if now is None else now
        return claims.expires_at - now < self.ttl_seconds / 2


JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# A verifier's clock may be this far behind the issuer's: an ``iat`` further in the
# future than this is refused.
CLOCK_SKEW_SECONDS = 60.0


# The longest token any verifier parses. PyJWT checks every character of a token in a
# Python loop (~0.1 us each) before any signature check, so an unauthenticated caller's
# 16 MiB "token" (a CompleteTasks/HeartbeatTasks item carries it in the message body)
# held the event loop for ~2 s. gRPC carries metadata up to 16 KiB, so no token a server
# receives as metadata is longer; an issued token is far below (~1 KiB + ~0.3 KiB a grant).
MAX_TOKEN_CHARS = 16 * 1024


def read_header(token: str, reason_prefix: str) -> dict[str, Any]:
    """The unverified JOSE header (to pick the key); ``<prefix>_INVALID`` if malformed or
    longer than ``MAX_TOKEN_CHARS`` (refused before any parsing). Every verifier reads the
    header first."""
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "token too large")
    try:
        return dict(jwt.get_unverified_header(token))
    except jwt.PyJWTError:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "malformed token") from None


def decode_token(
    token: str,
    key: Any,
    alg: str,
    audience: str,
    issuer: str,
    reason_prefix: str,
    max_lifetime_seconds: float,
    now: float | None = None,
) -> dict[str, Any]:
    """Signature, algorithm, audience, issuer and the required claims, checked by PyJWT;
    then the time claims by ``check_times`` (PyJWT coerces ``"123"`` or ``1.5e300`` with
    ``int()``, so its own time checks are not relied on). Failures are UNAUTHENTICATED."""
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "token too large")
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options={"require": _REQUIRED_CLAIMS, "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "token rejected") from None
    check_times(payload, time.time() if now is None else now, max_lifetime_seconds, reason_prefix)
    return payload


def _numeric_date(payload: dict[str, Any], name: str, reason_prefix: str) -> float | None:
    """A JWT NumericDate: an int or a finite float, never a bool or a string."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"{reason_prefix}_INVALID", f"bad claim type: {name}")
    return float(value)


def check_times(payload: dict[str, Any], now: float, max_lifetime_seconds: float, reason_prefix: str) -> None:
    """``iat`` and ``exp`` required and numeric, ``nbf`` numeric if present;
    ``nbf <= now < exp``, ``iat`` not in the future (beyond the clock skew), and
    ``exp - iat`` at most the maximum lifetime (so ``exp`` in the year 9999 is refused)."""
    iat = _numeric_date(payload, "iat", reason_prefix)
    exp = _numeric_date(payload, "exp", reason_prefix)
    nbf = _numeric_date(payload, "nbf", reason_prefix)
    if iat is None or exp is None:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "iat and exp are required")
    if exp <= now:
        raise Unauthenticated(f"{reason_prefix}_EXPIRED", "token expired")
    if exp <= iat:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "exp must follow iat")
    if exp - iat > max_lifetime_seconds:
        raise Unauthenticated(f"{reason_prefix}_LIFETIME_TOO_LONG", "token lifetime exceeds the maximum")
    if iat > now + CLOCK_SKEW_SECONDS:
        raise Unauthenticated(f"{reason_prefix}_INVALID", "token issued in the future")
    if nbf is not None and nbf > now:
        raise Unauthenticated(f"{reason_prefix}_NOT_YET_VALID", "token not valid yet")


@dataclass
class VerifiedCache:
    """Claims of tokens already verified, each used only inside its own validity window
    (``not_before <= now < expires_at``); an entry past its ``exp`` is dropped when met.
    Bounded (oldest first out); a miss just means verifying again."""

    max_entries: int = 4096
    _entries: OrderedDict[str, CapabilityClaims] = field(default_factory=OrderedDict)

    def put(self, token: str, claims: CapabilityClaims) -> None:
        if claims.expires_at <= 0:  # no known expiry: never cache (fail closed)
            return
        self._entries[token] = claims
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, token: str, now: float) -> CapabilityClaims | None:
        claims = self._entries.get(token)
        if claims is None:
            return None
        if now >= claims.expires_at:
            del self._entries[token]
            return None
        return claims if claims.not_before <= now else None

    def __len__(self) -> int:
        return len(self._entries)


@dataclass
class TokenVerifier:
    """Verifies capability tokens against a cached JWKS, refreshed on an unknown kid."""

    issuer: str
    fetch_jwks: JwksFetcher | None = None
    dev_hs256_secret: str | None = None
    refresh_min_seconds: float = 1.0
    cache_seconds: float = 300.0
    # The longest ``exp - iat`` accepted (the issuer's TTL in the composition roots).
    max_lifetime_seconds: float = 3600.0
    _keys: dict[str, Any] = field(default_factory=dict)
    _fetched_at: float = 0.0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _verified: VerifiedCache = field(default_factory=VerifiedCache)

    def remember(self, token: str, claims: CapabilityClaims) -> None:
        """Trust a token this process just minted (skips re-verifying our own signature).
        ``claims`` must be the issuer's (``TokenIssuer.issue_claims``): they carry its exp."""
        self._verified.put(token, claims)

    async def verify(self, token: str | None, now: float | None = None) -> CapabilityClaims:
        if not token:
            raise Unauthenticated("CAPABILITY_TOKEN_MISSING", "task capability token required")
        now = time.time() if now is None else now
        cached = self._verified.get(token, now)
        if cached is not None:
            return cached
        claims = await self._verify_uncached(token, now)
        self._verified.put(token, claims)
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
        payload = decode_token(
            token, key, alg, AUDIENCE, self.issuer, "CAPABILITY_TOKEN", self.max_lifetime_seconds, now
        )
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
    if not _canonical_uuid(task_id) or not _canonical_uuid(org_id):
        raise bad("task_id/org_id")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise bad("attempt")
    if payload.get("sub") != f"task:{task_id}":
        raise bad("sub")
    if not isinstance(payload.get("jti", ""), str):
        raise bad("jti")
    datasets_raw = payload.get("datasets")
    s3 = payload.get("s3")
    if not isinstance(datasets_raw, list) or not isinstance(s3, dict):
        raise bad("datasets/s3")
    if not all(_grant_claim_well_typed(d) for d in datasets_raw):
        raise bad("datasets")
    try:
        datasets = tuple(DatasetGrant.from_claim(d) for d in datasets_raw)
    except (KeyError, TypeError, ValueError, InvalidArgument):
        raise bad("datasets") from None
    reads, writes = s3.get("read_prefixes"), s3.get("write_prefixes")
    # A string here would iterate as one-character prefixes ("s" matches every s3:// URI).
    if not _str_list(reads) or not _str_list(writes):
        raise bad("s3")
    assert isinstance(reads, list) and isinstance(writes, list)
    return CapabilityClaims(
        org_id=str(org_id),
        task_id=str(task_id),
        attempt=attempt,
        datasets=datasets,
        s3_read_prefixes=tuple(reads),
        s3_write_prefixes=tuple(writes),
        expires_at=float(payload["exp"]),
        not_before=float(payload.get("nbf", 0.0)),
    )


def _canonical_uuid(value: object) -> bool:
    """A string in the canonical (lowercase, hyphenated) form the issuer writes."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(p, str) and p for p in value)


_GRANT_FIELDS = {"dataset_uuid", "dataset_version", "storage_ref"}
_STORAGE_FIELDS = {"scheme", "prefix", "bucket", "glob"}


def _grant_claim_well_typed(raw: object) -> bool:
    """Only the issuer's fields, each a string (``storage_ref`` an object of strings):
    ``DatasetGrant.from_claim`` would turn a number into a bucket name with ``str()``."""
    if not isinstance(raw, dict) or not raw.keys() <= _GRANT_FIELDS:
        return False
    if not isinstance(raw.get("dataset_uuid"), str) or not isinstance(raw.get("dataset_version"), str):
        return False
    ref = raw.get("storage_ref")
    if ref is None:
        return True
    return isinstance(ref, dict) and ref.keys() <= _STORAGE_FIELDS and all(isinstance(v, str) for v in ref.values())
