"""Trusted attach: a granted dataset version becomes the objects DuckDB may scan.

The service reads exactly one object itself, the version's ``_manifest.json``; the
Parquet objects it names are scanned in place by DuckDB's own Parquet reader through
the ``GrantedFileSystem`` (ranged reads: projection and row-group pruning survive),
never downloaded whole first. Dataset versions are immutable, so a checked manifest is
cached per version; the grant checks against the caller's token run on every request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from trace_platform.adapters.duckdb.granted_fs import PREFIX, GrantedObject
from trace_platform.adapters.duckdb.hardened import RELATION, PinnedFiles, Views
from trace_platform.adapters.objectstore.stores import ArrowObjectStore, ObjectMissing, ObjectStores
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.manifest import MANIFEST_MISMATCH, MANIFEST_NAME, MAX_MANIFEST_BYTES, parse_manifest
from trace_platform.core.models import StorageRef
from trace_platform.core.storage_paths import is_under, join, require_under_any


@dataclass(frozen=True)
class AttachedVersion:
    dataset_uuid: str
    dataset_version: str
    prefix_uri: str
    object_uris: tuple[str, ...]
    objects: tuple[GrantedObject, ...]
    # Set when every object is a local file DuckDB can read natively (a pinned database).
    pinned: PinnedFiles | None = None


class DatasetAttacher:
    def __init__(self, stores: ObjectStores, cache_size: int = 128) -> None:
        self._stores = stores
        self._cache: OrderedDict[tuple[str, str, str], AttachedVersion] = OrderedDict()
        self._cache_size = cache_size
        self._verified: set[tuple[tuple[str, str, str], tuple[str, ...]]] = set()

    async def attach(
        self,
        dataset_uuid: str,
        dataset_version: str,
        storage_ref: StorageRef | None,
        read_prefixes: tuple[str, ...] | None,
    ) -> AttachedVersion:
        """``read_prefixes`` None means the location came from the trusted registry."""
        if storage_ref is None:
            raise FailedPrecondition("STORAGE_REF_MISSING", "the dataset grant carries no storage location")
        prefix_uri = storage_ref.uri()
        if read_prefixes is not None:
            require_under_any(prefix_uri, read_prefixes, "STORAGE_NOT_GRANTED")
        key = (dataset_uuid, dataset_version, prefix_uri)
        attached = self._cache.get(key)
        if attached is None:
            attached = await asyncio.to_thread(self._load, dataset_uuid, dataset_version, prefix_uri)
            self._cache[key] = attached
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if read_prefixes is not None and (key, read_prefixes) not in self._verified:
            # Implied by the prefix check (every object lies under the prefix); kept as a
            # second, literal check of what will actually be read, once per version and grant.
            for uri in attached.object_uris:
                require_under_any(uri, read_prefixes, "STORAGE_NOT_GRANTED")
            self._verified.add((key, read_prefixes))
            if len(self._verified) > 4 * self._cache_size:
                self._verified.clear()
        return attached

    def _load(self, dataset_uuid: str, dataset_version: str, prefix_uri: str) -> AttachedVersion:
        store = self._stores.for_uri(prefix_uri)
        try:
            raw = store.get_bytes(join(prefix_uri, MANIFEST_NAME), MAX_MANIFEST_BYTES)
        except ObjectMissing:
            raise FailedPrecondition("MANIFEST_MISSING", "the dataset version has no manifest") from None
        manifest = parse_manifest(raw, expected_dataset_uuid=dataset_uuid, expected_dataset_version=dataset_version)
        if not prefix_uri.endswith("/" + manifest.prefix):
            raise FailedPrecondition(MANIFEST_MISMATCH, "the storage location is not this version's prefix")
        uris = tuple(join(prefix_uri, obj.key) for obj in manifest.objects)
        if not all(is_under(uri, prefix_uri) for uri in uris):
            raise FailedPrecondition("MANIFEST_KEY_OUTSIDE_PREFIX", "manifest names an object outside its prefix")
        filesystem = store.arrow_filesystem()
        objects = tuple(
            GrantedObject(
                virtual_path=f"{PREFIX}{dataset_uuid}/{dataset_version}/{obj.key}",
                filesystem=filesystem,
                path=store.arrow_path(uri),
                size=obj.size_bytes,
            )
            for obj, uri in zip(manifest.objects, uris, strict=True)
        )
        pinned = _pinned(store, prefix_uri, uris, objects)
        return AttachedVersion(dataset_uuid, dataset_version, prefix_uri, uris, objects, pinned)


def _pinned(
    store: ArrowObjectStore, prefix_uri: str, uris: tuple[str, ...], objects: tuple[GrantedObject, ...]
) -> PinnedFiles | None:
    directory = store.local_path(prefix_uri)
    paths = [store.local_path(uri) for uri in uris]
    if directory is None or any(p is None for p in paths):
        return None
    return PinnedFiles((directory.rstrip("/") + "/",), tuple(p for p in paths if p), tuple(o.size for o in objects))


# Names the exact set of range versions one query of a partitioned dataset read.
_PIN_NAMESPACE = uuid.UUID("6b0e4f53-0f5e-5b8e-9a63-2f1d6c1b7a40")


def combine(parts: list[AttachedVersion]) -> AttachedVersion:
    """One relation over several versions (a partitioned dataset's ranges); its version is a
    deterministic pin of the set read, so audit rows and answers say exactly what was read."""
    if len(parts) == 1:
        return parts[0]
    pin = str(uuid.uuid5(_PIN_NAMESPACE, ",".join(sorted(p.dataset_version for p in parts))))
    return AttachedVersion(
        dataset_uuid=parts[0].dataset_uuid,
        dataset_version=pin,
        prefix_uri="",
        object_uris=tuple(u for p in parts for u in p.object_uris),
        objects=tuple(o for p in parts for o in p.objects),
        pinned=_combine_pinned([p.pinned for p in parts]),
    )


def _combine_pinned(parts: list[PinnedFiles | None]) -> PinnedFiles | None:
    if any(p is None for p in parts):
        return None
    pinned = [p for p in parts if p is not None]
    return PinnedFiles(
        directories=tuple(d for p in pinned for d in p.directories),
        paths=tuple(path for p in pinned for path in p.paths),
        sizes=tuple(size for p in pinned for size in p.sizes),
    )


@dataclass(frozen=True)
class AttachedRelation:
    name: str
    version: AttachedVersion  # a dataset's pinned version (or pinned set of range versions)
    dataset: str = ""  # the registry name it was resolved from (user queries)


@dataclass(frozen=True)
class Attachment:
    """Everything one query may read: each relation's objects, in the relations' order."""

    relations: tuple[AttachedRelation, ...]
    objects: tuple[GrantedObject, ...]
    pinned: PinnedFiles | None
    views: Views


def attachment(relations: Sequence[AttachedRelation]) -> Attachment:
    """The relations as one request: objects concatenated, one view per relation over its
    own run of them. The lone relation ``dataset`` keeps the views empty (the form every
    single-dataset query always had, so its pinned databases are the same ones)."""
    rels = tuple(relations)
    if len(rels) == 1 and rels[0].name == RELATION:
        only = rels[0].version
        return Attachment(rels, only.objects, only.pinned, ())
    if any(not r.version.objects for r in rels):
        raise FailedPrecondition("DATASET_EMPTY", "a dataset version to attach has no objects")
    views = tuple((r.name, len(r.version.objects)) for r in rels)
    objects = tuple(o for r in rels for o in r.version.objects)
    pinned = _combine_pinned([r.version.pinned for r in rels])
    return Attachment(rels, objects, replace(pinned, views=views) if pinned is not None else None, views)
