"""Object stores from settings: the local store confined to its roots, and S3 when configured."""

from __future__ import annotations

from pathlib import Path

from trace_platform.adapters.objectstore.stores import ArrowObjectStore, LocalObjectStore, ObjectStores, S3ObjectStore
from trace_platform.core.config import Settings


def file_roots(settings: Settings) -> tuple[Path, ...]:
    return settings.query.file_roots or (settings.data_dir / "objects",)


def datasets_uri(settings: Settings) -> str:
    """Where dataset versions are written (Lite: ``<data dir>/objects``)."""
    return (settings.datasets_uri or f"file://{settings.data_dir / 'objects'}").rstrip("/")


def scratch_uri(settings: Settings) -> str:
    """Where task attempts write batch artifacts; each attempt gets ``<scratch>/<task>/<attempt>/``."""
    return (settings.scratch_uri or f"file://{settings.data_dir / 'scratch'}").rstrip("/")


def s3_configured(settings: Settings) -> bool:
    """An endpoint, static keys, or s3:// datasets or scratch. The last is EKS with IRSA:
    no keys in the environment, credentials from the default chain (web identity)."""
    store = settings.object_store
    uris = (settings.datasets_uri or "", settings.scratch_uri or "")
    return bool(store.s3_endpoint_url or store.s3_access_key_id or any(u.startswith("s3://") for u in uris))


def _stores(settings: Settings, roots: tuple[Path, ...]) -> ObjectStores:
    stores: list[ArrowObjectStore] = [LocalObjectStore(roots)]
    if s3_configured(settings):
        stores.append(S3ObjectStore(settings.object_store))
    return ObjectStores(stores)


def object_stores(settings: Settings) -> ObjectStores:
    """Dataset objects (read by the Query Service, written by ingest operators)."""
    return _stores(settings, file_roots(settings))


def artifact_stores(settings: Settings) -> ObjectStores:
    """Task batch artifacts under the scratch prefix (written by operators, read by the Sink)."""
    local = Path(scratch_uri(settings).removeprefix("file://"))
    return _stores(settings, (local,) if scratch_uri(settings).startswith("file://") else ())
