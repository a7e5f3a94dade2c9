"""The Trace-owned dataset manifest (``_manifest.json``), see ``docs/manifest.md``.

A dataset version's prefix holds Parquet objects and one manifest naming them. The
Query Service reads only the manifest, checks it, and hands the named objects to the
scanner; it never lists the prefix. Parsing is strict: any unknown field, wrong type,
absolute or escaping key, duplicate, or mismatch with the expected dataset is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.storage_paths import is_relative_key

MANIFEST_NAME = "_manifest.json"
FORMAT = "trace.dataset_manifest"
VERSION = 1
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_OBJECTS = 100_000

_TOP_KEYS = {"format", "version", "dataset_uuid", "dataset_version", "objects"}
_OBJECT_KEYS = {"key", "size_bytes", "row_count"}


@dataclass(frozen=True)
class ManifestObject:
    key: str  # relative to the dataset prefix
    size_bytes: int
    row_count: int | None = None


@dataclass(frozen=True)
class DatasetManifest:
    dataset_uuid: str
    dataset_version: str
    objects: tuple[ManifestObject, ...]

    def to_json(self) -> bytes:
        objects = []
        for obj in self.objects:
            entry: dict[str, Any] = {"key": obj.key, "size_bytes": obj.size_bytes}
            if obj.row_count is not None:
                entry["row_count"] = obj.row_count
            objects.append(entry)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "dataset_uuid": self.dataset_uuid,
            "dataset_version": self.dataset_version,
            "objects": objects,
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()


def _bad(detail: str) -> FailedPrecondition:
    return FailedPrecondition("MANIFEST_INVALID", f"dataset manifest is invalid: {detail}")


def _non_negative_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_manifest(raw: bytes, *, dataset_uuid: str, dataset_version: str) -> DatasetManifest:
    """Parse and check a manifest for the expected dataset version (permanent errors only)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _bad("too large")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad("not JSON") from None
    if not isinstance(doc, dict) or set(doc) != _TOP_KEYS:
        raise _bad("unexpected or missing fields")
    if doc["format"] != FORMAT or doc["version"] != VERSION:
        raise _bad("unknown format or version")
    if doc["dataset_uuid"] != dataset_uuid or doc["dataset_version"] != dataset_version:
        raise _bad("names another dataset version")
    entries = doc["objects"]
    if not isinstance(entries, list) or not entries or len(entries) > MAX_OBJECTS:
        raise _bad("objects must be a non-empty list")
    objects: list[ManifestObject] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict) or not {"key", "size_bytes"} <= set(entry) <= _OBJECT_KEYS:
            raise _bad("object entry fields")
        key, size, rows = entry["key"], entry["size_bytes"], entry.get("row_count")
        if not isinstance(key, str) or not is_relative_key(key) or not key.endswith(".parquet"):
            raise FailedPrecondition("MANIFEST_KEY_OUTSIDE_PREFIX", "manifest names an object outside its prefix")
        if key in seen:
            raise _bad("duplicate object")
        if not _non_negative_int(size) or (rows is not None and not _non_negative_int(rows)):
            raise _bad("object sizes")
        seen.add(key)
        objects.append(ManifestObject(key, size, rows))
    return DatasetManifest(dataset_uuid, dataset_version, tuple(objects))
