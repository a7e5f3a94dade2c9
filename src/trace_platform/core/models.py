"""Plain domain values shared by services (no protobuf, no driver types)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from trace_platform.core.validation import require_uuid


class TaskStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


STORAGE_SCHEMES = ("s3", "file")


@dataclass(frozen=True)
class StorageRef:
    scheme: str
    prefix: str
    bucket: str = ""
    glob: str = "*.parquet"

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "bucket": self.bucket, "prefix": self.prefix, "glob": self.glob}

    def uri(self) -> str:
        """The prefix as a URI with a trailing slash: ``s3://bucket/prefix/`` or ``file:///dir/``."""
        path = self.prefix.strip("/")
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{path}/"
        return f"file:///{path}/"

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> StorageRef:
        scheme = raw["scheme"]
        if scheme not in STORAGE_SCHEMES:
            raise ValueError("unknown storage scheme")
        prefix = raw["prefix"]
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("storage prefix required")
        if scheme == "s3" and not raw.get("bucket"):
            raise ValueError("s3 storage requires a bucket")
        if scheme == "file" and not prefix.startswith("/"):
            raise ValueError("file storage requires an absolute directory")
        return StorageRef(
            scheme=scheme, prefix=prefix, bucket=str(raw.get("bucket") or ""), glob=str(raw.get("glob") or "*.parquet")
        )


@dataclass(frozen=True)
class DatasetGrant:
    dataset_uuid: str
    dataset_version: str
    storage_ref: StorageRef | None = None

    def to_claim(self) -> dict[str, Any]:
        claim: dict[str, Any] = {"dataset_uuid": self.dataset_uuid, "dataset_version": self.dataset_version}
        if self.storage_ref is not None:
            claim["storage_ref"] = self.storage_ref.to_dict()
        return claim

    @staticmethod
    def from_claim(raw: dict[str, Any]) -> DatasetGrant:
        ref = raw.get("storage_ref")
        return DatasetGrant(
            dataset_uuid=require_uuid("dataset_uuid", raw["dataset_uuid"]),
            dataset_version=require_uuid("dataset_version", raw["dataset_version"]),
            storage_ref=StorageRef.from_dict(ref) if ref else None,
        )


@dataclass(frozen=True)
class DatasetPublication:
    dataset_uuid: str
    dataset_version: str
    storage_ref: StorageRef
    config_hash: str = ""
    range_start: int | None = None
    range_end: int | None = None


@dataclass(frozen=True)
class DatasetEvent:
    dataset_uuid: str
    dataset_version: str
    cursor: int | None = None
    partition_key: str = ""
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_uuid": self.dataset_uuid,
            "dataset_version": self.dataset_version,
            "cursor": self.cursor,
            "partition_key": self.partition_key,
            "start": self.start,
            "end": self.end,
        }


@dataclass(frozen=True)
class TaskRef:
    task_id: str
    attempt: int
    lease_token: str


@dataclass(frozen=True)
class NewTask:
    org_id: str
    operator: str
    config: dict[str, Any]
    inputs: list[Any]
    max_attempts: int
    datasets: tuple[DatasetGrant, ...] = ()
    task_id: str | None = None
