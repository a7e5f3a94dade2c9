"""What a DAG deploy resolves in the caller's org, behind small Protocols: a bundle id to
its immutable object (url and SHA-256), an alert definition name to its id."""

from __future__ import annotations

from typing import Protocol


class BundleLookup(Protocol):
    async def get(self, org_id: str, bundle_id: str) -> tuple[str, str] | None:
        """``(url, sha256)`` of a finalized (ready) bundle of the org; None otherwise."""
        ...


class AlertLookup(Protocol):
    async def id_by_name(self, org_id: str, name: str) -> str | None: ...
