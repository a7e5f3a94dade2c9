"""Columns of a dataset version, read from the Parquet footer of one of its files.

Every file of a version is written with the same schema (the producer's), so one footer
is enough; reading it costs one listing and one ranged read, never the data."""

from __future__ import annotations

import fnmatch
import logging

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.core.dataset_registry import DatasetColumn
from trace_platform.core.errors import TraceError
from trace_platform.core.models import StorageRef

log = logging.getLogger(__name__)
MAX_LISTED = 10_000


def read_columns(stores: ObjectStores, ref: StorageRef, pii: frozenset[str]) -> tuple[DatasetColumn, ...]:
    """The version's columns; () when it has no readable file (logged with the reason
    kind only: the storage location is not a user's to see)."""
    uri = ref.uri()
    try:
        store = stores.for_uri(uri)
        fs = store.arrow_filesystem()
        base = store.arrow_path(uri)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = sorted(
            i.path
            for i in infos[:MAX_LISTED]
            if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, ref.glob)
        )
        if not files:
            return ()
        schema = pq.read_schema(fs.open_input_file(files[0]))
    except (OSError, ValueError, TraceError) as exc:
        log.warning("dataset schema unreadable: %s", type(exc).__name__)
        return ()
    lowered = {c.lower() for c in pii}
    return tuple(DatasetColumn(f.name, str(f.type), f.nullable, f.name.lower() in lowered) for f in schema)
