"""The dataset registry as users see it: entries, columns, published names.

A published name (ADR 0008) is an alias of a registry dataset: metadata only, the
dataset's uuid stays its storage identity. Names are lower snake_case, at most 128
characters; registry names the platform makes itself (``<sync>.<dataset_key>``) carry a
dot and so never collide with a published one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from trace_platform.core.errors import InvalidArgument

PUBLISHED_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,127}$")


def require_published_name(value: str) -> str:
    if not PUBLISHED_NAME_RE.fullmatch(value or ""):
        raise InvalidArgument("INVALID_DATASET_NAME", f"name must match {PUBLISHED_NAME_RE.pattern}", field="name")
    return value


@dataclass(frozen=True)
class DatasetColumn:
    name: str
    type: str  # the Arrow type as Arrow prints it
    nullable: bool
    pii: bool


@dataclass(frozen=True)
class ChainSyncStreamSource:
    sync_name: str
    dataset_key: str


@dataclass(frozen=True)
class DagOutputSource:
    dag_name: str
    job_name: str
    output_index: int


@dataclass(frozen=True)
class DatasetInfo:
    dataset_id: str
    name: str
    published_names: tuple[str, ...]
    kind: str  # 'versioned' | 'partitioned'
    published: bool
    current_version: str | None
    range_start: int | None
    range_end: int | None
    version_count: int
    pii_columns: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    chain_sync_stream: ChainSyncStreamSource | None = None
    columns: tuple[DatasetColumn, ...] = ()


@dataclass(frozen=True)
class PublishResult:
    dataset: DatasetInfo
    created: bool  # False: the name already named this dataset
