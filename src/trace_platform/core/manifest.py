"""The Trace-owned dataset manifest (``_manifest.json``) and version-addressed layout.

A dataset version lives under ``datasets/{dataset_uuid}/{dataset_version}/``: its
Parquet objects and one ``_manifest.json`` naming them. The producer (a trusted
worker) writes the manifest last; readers (the Query Service) treat it as untrusted
input and parse it with ``parse_manifest``, which is pure and strict: bounded size,
exact keys, no duplicate JSON keys, and every object key a plain relative path that
stays under the version's prefix. Format: docs/manifest.md.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from trace_platform.core import strict_json
from trace_platform.core.errors import FailedPrecondition

MANIFEST_NAME = "_manifest.json"
FORMAT = "trace.dataset_manifest"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_OBJECTS = 10_000
MAX_KEY_CHARS = 512

# A bad manifest is a permanent error for whoever reads it (FAILED_PRECONDITION).
INVALID_MANIFEST = "MANIFEST_INVALID"
MANIFEST_MISMATCH = "MANIFEST_MISMATCH"
UNSAFE_OBJECT_KEY = "MANIFEST_KEY_OUTSIDE_PREFIX"

# UUIDv5 namespace for dataset versions derived from {dataset_uuid, range, config_hash}.
VERSION_NAMESPACE = uuid.UUID("3f6c2a8e-9b1d-5c47-8e2f-0a4b6d8c1e93")

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = {"format", "format_version", "dataset_uuid", "dataset_version", "prefix", "objects"}
_OBJECT_KEYS = {"key", "size_bytes", "sha256", "row_count"}


def object_prefix(dataset_uuid: str, dataset_version: str) -> str:
    """``datasets/{dataset_uuid}/{dataset_version}/`` (canonical lowercase UUIDs)."""
    return f"datasets/{uuid.UUID(dataset_uuid)}/{uuid.UUID(dataset_version)}/"


def manifest_key(prefix: str) -> str:
    return f"{prefix}{MANIFEST_NAME}"


def derive_dataset_version(dataset_uuid: str, range_start: int, range_end: int, config_hash: str) -> str:
    """Deterministic version: a retried range publishes the same version under the same prefix."""
    name = f"{uuid.UUID(dataset_uuid)}:{range_start}:{range_end}:{config_hash}"
    return str(uuid.uuid5(VERSION_NAMESPACE, name))


@dataclass(frozen=True)
class ManifestObject:
    key: str  # relative to the manifest's prefix
    size_bytes: int
    sha256: str
    row_count: int


@dataclass(frozen=True)
class DatasetManifest:
    dataset_uuid: str
    dataset_version: str
    prefix: str
    objects: tuple[ManifestObject, ...]  # sorted by key

    def object_keys(self) -> list[str]:
        """Full object-store keys, each guaranteed to start with ``prefix``."""
        return [self.prefix + o.key for o in self.objects]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "dataset_uuid": self.dataset_uuid,
            "dataset_version": self.dataset_version,
            "prefix": self.prefix,
            "objects": [
                {"key": o.key, "size_bytes": o.size_bytes, "sha256": o.sha256, "row_count": o.row_count}
                for o in self.objects
            ],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1).encode()


def build_manifest(dataset_uuid: str, dataset_version: str, objects: list[ManifestObject]) -> DatasetManifest:
    """Build (and so validate) a manifest for the version-addressed prefix."""
    prefix = object_prefix(dataset_uuid, dataset_version)
    return _check(
        DatasetManifest(
            dataset_uuid=str(uuid.UUID(dataset_uuid)),
            dataset_version=str(uuid.UUID(dataset_version)),
            prefix=prefix,
            objects=tuple(sorted(objects, key=lambda o: o.key)),
        )
    )


def parse_manifest(
    data: bytes,
    *,
    expected_prefix: str | None = None,
    expected_dataset_uuid: str | None = None,
    expected_dataset_version: str | None = None,
) -> DatasetManifest:
    """Parse untrusted manifest bytes; refuse anything not exactly in the format."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise _bad(f"manifest exceeds {MAX_MANIFEST_BYTES} bytes")
    try:
        raw = strict_json.loads(data, max_bytes=MAX_MANIFEST_BYTES)
    except strict_json.JsonRefused as exc:
        raise _bad(f"manifest is not strict UTF-8 JSON: {exc.message}") from None
    if not isinstance(raw, dict) or set(raw) != _TOP_KEYS:
        raise _bad(f"manifest must be an object with exactly the keys {sorted(_TOP_KEYS)}")
    if raw["format"] != FORMAT or _int(raw["format_version"], "format_version") != FORMAT_VERSION:
        raise _bad(f"unsupported manifest format (expected {FORMAT} version {FORMAT_VERSION})")
    objects_raw = raw["objects"]
    if not isinstance(objects_raw, list) or len(objects_raw) > MAX_OBJECTS:
        raise _bad(f"objects must be a list of at most {MAX_OBJECTS} entries")
    objects = []
    for i, o in enumerate(objects_raw):
        if not isinstance(o, dict) or set(o) != _OBJECT_KEYS:
            raise _bad(f"objects[{i}] must have exactly the keys {sorted(_OBJECT_KEYS)}")
        if not isinstance(o["key"], str) or not isinstance(o["sha256"], str):
            raise _bad(f"objects[{i}].key and .sha256 must be strings")
        objects.append(
            ManifestObject(
                key=o["key"],
                size_bytes=_int(o["size_bytes"], f"objects[{i}].size_bytes"),
                sha256=o["sha256"],
                row_count=_int(o["row_count"], f"objects[{i}].row_count"),
            )
        )
    for name in ("dataset_uuid", "dataset_version", "prefix"):
        if not isinstance(raw[name], str):
            raise _bad(f"{name} must be a string")
    manifest = _check(DatasetManifest(raw["dataset_uuid"], raw["dataset_version"], raw["prefix"], tuple(objects)))
    for got, want, what in (
        (manifest.prefix, expected_prefix, "prefix"),
        (manifest.dataset_uuid, expected_dataset_uuid, "dataset_uuid"),
        (manifest.dataset_version, expected_dataset_version, "dataset_version"),
    ):
        if want is not None and got != want:
            raise FailedPrecondition(MANIFEST_MISMATCH, f"manifest {what} does not match the granted one", field=what)
    return manifest


def check_relative_key(key: str) -> str:
    """A plain relative object path: segments of safe characters, no '.', '..', '/' at either end."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(_SEGMENT.fullmatch(seg) and seg != ".." for seg in key.split("/")):
        raise FailedPrecondition(UNSAFE_OBJECT_KEY, "object key must be a relative path of safe segments", field="key")
    return key


def _check(m: DatasetManifest) -> DatasetManifest:
    for name in ("dataset_uuid", "dataset_version"):
        value = getattr(m, name)
        try:
            canonical = str(uuid.UUID(value))
        except ValueError:
            raise _bad(f"{name} must be a UUID") from None
        if canonical != value:
            raise _bad(f"{name} must be a lowercase hyphenated UUID")
    if m.prefix != object_prefix(m.dataset_uuid, m.dataset_version):
        raise _bad("prefix must be datasets/{dataset_uuid}/{dataset_version}/")
    seen: set[str] = set()
    for o in m.objects:
        check_relative_key(o.key)
        if not o.key.endswith(".parquet"):
            raise FailedPrecondition(UNSAFE_OBJECT_KEY, "manifest objects must be .parquet files", field="key")
        if o.key in seen:
            raise _bad("duplicate object key")
        seen.add(o.key)
        if not (m.prefix + o.key).startswith(m.prefix):  # holds by construction; kept as the stated invariant
            raise FailedPrecondition(UNSAFE_OBJECT_KEY, "object key escapes the prefix", field="key")
        if not _SHA256.fullmatch(o.sha256):
            raise _bad("sha256 must be 64 lowercase hex digits")
        if o.size_bytes < 0 or o.row_count < 0:
            raise _bad("size_bytes and row_count must not be negative")
    return m


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{what} must be an integer")
    return value


def _bad(message: str) -> FailedPrecondition:
    return FailedPrecondition(INVALID_MANIFEST, message)
