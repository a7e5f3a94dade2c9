"""Orgs, users and memberships: who a user token's subject is, and their role in an org."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from trace_platform.adapters.postgres import queries


@dataclass(frozen=True)
class Membership:
    user_id: str
    role: str  # viewer | editor | admin


class IdentityRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("identity")

    async def membership(self, subject: str, org_id: str) -> Membership | None:
        row = await self._pool.fetchrow(self._sql["member_role"], subject, org_id)
        return Membership(row["user_id"], row["role"]) if row else None

    async def ensure_member(self, org_id: str, org_name: str, subject: str, role: str) -> str:
        """Create the org, the user and the membership when missing (idempotent); the
        user's id. Used by Lite's start and by operators' bootstrap, never by a user RPC."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(self._sql["ensure_org"], org_id, org_name)
            user_id: str = await conn.fetchval(self._sql["ensure_user"], subject)
            await conn.execute(self._sql["set_membership"], org_id, user_id, role)
        return user_id

    async def remove_member(self, org_id: str, user_id: str) -> None:
        await self._pool.execute(self._sql["remove_membership"], org_id, user_id)
