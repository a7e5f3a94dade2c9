"""The compact operator: adjacent range versions of one stream merged into one object.

A trusted platform operator (like cryo_ingest: it reads the platform's own objects with
the worker's store credentials). Its task, created by the compaction planner
(servers/chain_sync/compaction.py), names the input versions and their ranges and declares
the one output version. It reads every input's manifest (checked as a query checks it),
its Parquet objects (sizes and row counts must match the manifest), keeps only rows
inside each input's range, writes them in block order as one Parquet object plus manifest
(last) under the output version's own prefix, and publishes that version. The ledger
cutover happens in the completion's transaction (migration 0015). A retried attempt
rewrites the same version at the same prefix.
"""

from __future__ import annotations

import asyncio
import hashlib
import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.core.compaction import CompactConfig, CompactInput
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    ManifestObject,
    build_manifest,
    object_prefix,
    parse_manifest,
)
from trace_platform.core.publication import output_prefix
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.workers.cryo_ingest import storage_ref_for
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

OPERATOR = "compact"
OBJECT_NAME = "compacted.parquet"
MAX_OBJECT_BYTES = 2 * 1024**3
ROW_GROUP_ROWS = 128 * 1024


def compact_operator(stores: ObjectStores, datasets_uri: str) -> Operator:
    async def compact(ctx: OperatorContext) -> OperatorResult:
        config = CompactConfig.from_dict(ctx.config)
        prefix_uri = output_prefix(datasets_uri, config.dataset_uuid, config.dataset_version)
        await asyncio.to_thread(merge, stores, datasets_uri, config)
        pub = common_pb2.DatasetPublication(
            dataset_uuid=config.dataset_uuid,
            dataset_version=config.dataset_version,
            storage_ref=storage_ref_for(prefix_uri),
            config_hash=config.config_hash,
            range_start=config.range_start,
            range_end=config.range_end,
        )
        return OperatorResult(datasets_published=[pub])

    return compact


def merge(stores: ObjectStores, datasets_uri: str, config: CompactConfig) -> int:
    """Write the merged object and its manifest; returns the row count."""
    tables = [_read_input(stores, datasets_uri, config.dataset_uuid, i) for i in config.inputs]
    schema = tables[0].schema
    for t in tables[1:]:
        if not t.schema.equals(schema):
            raise FailedPrecondition("COMPACT_SCHEMA_MISMATCH", "input versions differ in schema", category="output")
    merged = pa.concat_tables(tables)
    buf = io.BytesIO()
    pq.write_table(merged, buf, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    data = buf.getvalue()
    if len(data) > MAX_OBJECT_BYTES:
        raise FailedPrecondition("COMPACT_TOO_LARGE", "the merged object exceeds its cap", category="output")
    prefix_uri = output_prefix(datasets_uri, config.dataset_uuid, config.dataset_version)
    store = stores.for_uri(prefix_uri)
    store.put_bytes(prefix_uri + OBJECT_NAME, data)
    obj = ManifestObject(OBJECT_NAME, len(data), hashlib.sha256(data).hexdigest(), merged.num_rows)
    manifest = build_manifest(config.dataset_uuid, config.dataset_version, [obj])
    store.put_bytes(prefix_uri + MANIFEST_NAME, manifest.to_json())  # last: readers see whole versions
    return int(merged.num_rows)


def _read_input(stores: ObjectStores, datasets_uri: str, dataset_uuid: str, inp: CompactInput) -> pa.Table:
    prefix = object_prefix(dataset_uuid, inp.dataset_version)
    prefix_uri = output_prefix(datasets_uri, dataset_uuid, inp.dataset_version)
    store = stores.for_uri(prefix_uri)
    manifest = parse_manifest(
        store.get_bytes(prefix_uri + MANIFEST_NAME, MAX_MANIFEST_BYTES),
        expected_prefix=prefix,
        expected_dataset_uuid=dataset_uuid,
        expected_dataset_version=inp.dataset_version,
    )
    parts = []
    for o in manifest.objects:
        raw = store.get_bytes(prefix_uri + o.key, o.size_bytes)
        if len(raw) != o.size_bytes or hashlib.sha256(raw).hexdigest() != o.sha256:
            raise FailedPrecondition(
                "OBJECT_SIZE_MISMATCH", "an input object differs from its manifest", category="output"
            )
        table = pq.read_table(io.BytesIO(raw))
        if table.num_rows != o.row_count:
            raise FailedPrecondition(
                "MANIFEST_MISMATCH", "an input object's rows differ from its manifest", category="output"
            )
        parts.append(table)
    if not parts:
        raise FailedPrecondition("COMPACT_INPUT_EMPTY", "an input version has no objects", category="output")
    table = pa.concat_tables(parts)
    if "block_number" in table.column_names:
        # Only the input's own range: a row outside it would show a block twice.
        n = table.column("block_number")
        keep = pc.and_(pc.greater_equal(n, inp.range_start), pc.less(n, inp.range_end))
        table = table.filter(keep).sort_by("block_number")
    return table
