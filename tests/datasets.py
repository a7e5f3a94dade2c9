"""Test data: Parquet dataset versions with a Trace manifest, written through a real store."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from trace_platform.adapters.objectstore.stores import ArrowObjectStore
from trace_platform.core.manifest import MANIFEST_NAME, ManifestObject, build_manifest, object_prefix
from trace_platform.core.models import DatasetGrant, DatasetPublication, StorageRef
from trace_platform.gen.trace.v1 import common_pb2

FIXTURE_ROWS = {
    "dedupe_key": ["dedupe-001", "dedupe-002", "dedupe-003"],
    "block_number": [100, 101, 102],
    "email": ["a@example.com", "b@example.com", "c@example.com"],
}


def blocks_table(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "block_number": pa.array(range(start, start + n), pa.int64()),
            "gas_used": pa.array([(i * 7919) % 30_000_000 for i in range(start, start + n)], pa.int64()),
            "miner": pa.array([f"0x{i % 97:040x}" for i in range(start, start + n)]),
        }
    )


def parquet_bytes(table: pa.Table, row_group_size: int = 10_000) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


@dataclass(frozen=True)
class FixtureDataset:
    dataset_uuid: str
    dataset_version: str
    storage_ref: StorageRef

    @property
    def grant(self) -> DatasetGrant:
        return DatasetGrant(self.dataset_uuid, self.dataset_version, self.storage_ref)

    @property
    def grant_pb(self) -> common_pb2.DatasetGrant:
        ref = common_pb2.StorageRef(**self.storage_ref.to_dict())
        return common_pb2.DatasetGrant(
            dataset_uuid=self.dataset_uuid, dataset_version=self.dataset_version, storage_ref=ref
        )

    @property
    def publication(self) -> DatasetPublication:
        return DatasetPublication(self.dataset_uuid, self.dataset_version, self.storage_ref)

    @property
    def prefix_uri(self) -> str:
        return self.storage_ref.uri()


def write_dataset(
    store: ArrowObjectStore,
    root_uri: str,
    parts: list[pa.Table],
    *,
    dataset_uuid: str | None = None,
    manifest_keys: list[str] | None = None,
    manifest_bytes: bytes | None = None,
) -> FixtureDataset:
    """Objects ``part-N.parquet`` and a manifest under ``root_uri/datasets/<uuid>/<version>/``.

    ``manifest_keys`` writes a manifest naming those keys instead (hostile manifests)."""
    ds_uuid = dataset_uuid or str(uuid.uuid4())
    version = str(uuid.uuid4())
    prefix = f"{root_uri.rstrip('/')}/{object_prefix(ds_uuid, version)}"
    objects = []
    for i, table in enumerate(parts):
        data = parquet_bytes(table)
        key = f"part-{i}.parquet"
        store.put_bytes(prefix + key, data)
        objects.append(ManifestObject(key, len(data), hashlib.sha256(data).hexdigest(), table.num_rows))
    if manifest_bytes is None:
        doc = build_manifest(ds_uuid, version, objects).to_dict()
        if manifest_keys is not None:
            doc["objects"] = [{"key": k, "size_bytes": 1, "sha256": "0" * 64, "row_count": 1} for k in manifest_keys]
        manifest_bytes = json.dumps(doc).encode()
    store.put_bytes(prefix + MANIFEST_NAME, manifest_bytes)
    if prefix.startswith("s3://"):
        bucket, _, key = prefix[5:].partition("/")
        ref = StorageRef("s3", key, bucket)
    else:
        ref = StorageRef("file", prefix[len("file://") :])
    return FixtureDataset(ds_uuid, version, ref)
