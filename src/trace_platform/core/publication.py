"""What a task completion may publish. Pure logic, no I/O.

Invariant: a completion registers a dataset version only when the task was created for
exactly that output (``DeclaredOutput``, recorded by the trusted creator: the chain_sync
planner), in the org the token was minted for, with its storage being the prefix the
platform derives for that version (``output_prefix``), which must also lie under one of
the token's write prefixes.
Nothing the task sends (dataset uuid, version, config hash, range, location) chooses a
dataset, an org or a storage location on its own; anything else is PERMISSION_DENIED
and the caller writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trace_platform.core.errors import PermissionDenied
from trace_platform.core.manifest import object_prefix
from trace_platform.core.models import DatasetPublication
from trace_platform.core.storage_paths import is_under, normalize_prefix
from trace_platform.core.tokens import CapabilityClaims

NOT_ALLOWED = "PUBLICATION_NOT_ALLOWED"
OUTSIDE_PREFIX = "PUBLICATION_OUTSIDE_PREFIX"

# A glob is one file-name pattern inside the version's prefix: no separators, no traversal.
_GLOB = re.compile(r"^[A-Za-z0-9*?._=-]{1,128}$")


@dataclass(frozen=True)
class DeclaredOutput:
    """One dataset version a task was created to produce (in the task's org)."""

    dataset_uuid: str
    dataset_version: str
    config_hash: str = ""
    range_start: int | None = None
    range_end: int | None = None

    @staticmethod
    def parse_all(raw_json: str) -> tuple[DeclaredOutput, ...]:
        items: list[dict[str, Any]] = json.loads(raw_json)
        return tuple(
            DeclaredOutput(
                dataset_uuid=str(o["dataset_uuid"]),
                dataset_version=str(o["dataset_version"]),
                config_hash=str(o.get("config_hash") or ""),
                range_start=o.get("range_start"),
                range_end=o.get("range_end"),
            )
            for o in items
        )


def output_prefix(datasets_uri: str, dataset_uuid: str, dataset_version: str) -> str:
    """Where a version's objects live: ``<datasets uri>/datasets/<uuid>/<version>/``."""
    return f"{datasets_uri.rstrip('/')}/{object_prefix(dataset_uuid, dataset_version)}"


def output_prefixes(datasets_uri: str, declared: Sequence[DeclaredOutput]) -> tuple[str, ...]:
    """The write prefixes a task's token carries for its declared outputs (none without a
    datasets location: fail closed)."""
    if not datasets_uri:
        return ()
    return tuple(output_prefix(datasets_uri, o.dataset_uuid, o.dataset_version) for o in declared)


def check_publications(
    publications: Sequence[DatasetPublication],
    declared: Sequence[DeclaredOutput],
    task_org_id: str,
    claims: CapabilityClaims,
    datasets_uri: str,
) -> None:
    """Raise PermissionDenied unless every publication is one of ``declared`` and lies
    under its own derived prefix and the token's write prefixes."""
    if claims.org_id != task_org_id:
        raise PermissionDenied(NOT_ALLOWED, "the token's org is not the task's org")
    by_version = {(o.dataset_uuid, o.dataset_version): o for o in declared}
    for pub in publications:
        out = by_version.get((pub.dataset_uuid, pub.dataset_version))
        if out is None:
            raise PermissionDenied(NOT_ALLOWED, "the task was not created to publish this dataset version")
        if (pub.range_start, pub.range_end, pub.config_hash) != (out.range_start, out.range_end, out.config_hash):
            raise PermissionDenied(NOT_ALLOWED, "the publication does not match the task's declared output")
        ref = pub.storage_ref
        uri = ref.uri()
        expected = output_prefix(datasets_uri, pub.dataset_uuid, pub.dataset_version) if datasets_uri else ""
        inside = (
            bool(datasets_uri)
            and (ref.scheme == "s3" or not ref.bucket)
            and _GLOB.match(ref.glob) is not None
            and ".." not in ref.glob
            and normalize_prefix(uri) == normalize_prefix(expected)
            and any(is_under(uri, p) for p in claims.s3_write_prefixes)
        )
        if not inside:
            raise PermissionDenied(OUTSIDE_PREFIX, "the published storage is outside the task's write prefixes")
