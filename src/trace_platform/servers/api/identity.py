"""Who calls a user RPC, and whether their role allows it.

Identity comes only from the ``authorization: Bearer <jwt>`` header: the token is
verified in full (``core.user_tokens``), its ``sub`` names a user and its ``org_id`` the
org it acts in, and that user must hold a membership there. Nothing else in the request
(metadata, fields) can name a user or an org. Deny by default: a verified token of a
subject with no membership in that org is refused like a role that is too weak.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import asyncpg
import grpc

from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.core.config import UserAuthSettings
from trace_platform.core.errors import PermissionDenied
from trace_platform.core.user_tokens import UserTokenVerifier, load_jwks_keys
from trace_platform.servers.common.auth import bearer_token


class Role(IntEnum):
    """Ordered: a role allows everything a lower one does."""

    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @staticmethod
    def parse(name: str) -> Role:
        return Role[name.upper()]


@dataclass(frozen=True)
class Principal:
    org_id: str
    user_id: str
    role: Role


class UserAuthenticator:
    def __init__(self, verifier: UserTokenVerifier, identities: IdentityRepository) -> None:
        self._verifier = verifier
        self._identities = identities

    async def authenticate(self, context: grpc.aio.ServicerContext, need: Role) -> Principal:
        claims = self._verifier.verify(bearer_token(context))
        member = await self._identities.membership(claims.subject, claims.org_id)
        if member is None:
            raise PermissionDenied("NOT_A_MEMBER", "the token's user is not a member of its org")
        principal = Principal(claims.org_id, member.user_id, Role.parse(member.role))
        if principal.role < need:
            raise PermissionDenied("ROLE_REQUIRED", f"this call needs the {need.name.lower()} role")
        return principal


def user_token_verifier(settings: UserAuthSettings) -> UserTokenVerifier:
    """HS256 with a shared secret (Lite), or the identity provider's JWKS (ES256/RS256)."""
    return UserTokenVerifier(
        settings.issuer,
        hs256_secret=settings.hs256_secret,
        public_keys=load_jwks_keys(settings.jwks_path) if settings.jwks_path else {},
        max_lifetime_seconds=settings.max_lifetime_seconds,
    )


def build_user_authenticator(pool: asyncpg.Pool, settings: UserAuthSettings) -> UserAuthenticator:
    return UserAuthenticator(user_token_verifier(settings), IdentityRepository(pool))
