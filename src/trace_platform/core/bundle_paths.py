"""Where uploaded UDF bundles live, derived from the org and the content (pure).

A usable bundle is ``<root>/<org_id>/<sha256>.zip``: named by its content, so an object
once published never changes (a second upload of the same bytes writes the same bytes).
An upload in progress is staged apart, under ``<root>-staging/<org_id>/<bundle_id>.zip``,
outside the invoker's bundle root: nothing there is ever fetched to run.
"""

from __future__ import annotations

import re
import uuid

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.storage_paths import normalize_prefix

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _root(root: str) -> str:
    prefix = normalize_prefix(root)
    if prefix is None:
        raise InvalidArgument("BUNDLES_URI_INVALID", "the bundle store location is not a file:// or s3:// prefix")
    return prefix.rstrip("/")


def _org(org_id: str) -> str:
    return str(uuid.UUID(org_id))  # canonical form; raises on anything else


def final_uri(root: str, org_id: str, sha256: str) -> str:
    if not SHA256_RE.match(sha256):
        raise InvalidArgument("INVALID_SHA256", "sha256 must be 64 lowercase hex digits")
    return f"{_root(root)}/{_org(org_id)}/{sha256}.zip"


def staging_uri(root: str, org_id: str, bundle_id: str) -> str:
    return f"{_root(root)}-staging/{_org(org_id)}/{uuid.UUID(bundle_id)}.zip"
