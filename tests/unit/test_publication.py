"""core.publication: the pure rule of what a completion may publish (the integration side
is tests/security/test_publication.py)."""

from __future__ import annotations

import uuid

import pytest

from trace_platform.core.errors import PermissionDenied
from trace_platform.core.models import DatasetPublication, StorageRef
from trace_platform.core.publication import (
    NOT_ALLOWED,
    OUTSIDE_PREFIX,
    DeclaredOutput,
    check_publications,
    output_prefixes,
)
from trace_platform.core.tokens import CapabilityClaims

ORG = str(uuid.uuid4())
DS, VER = str(uuid.uuid4()), str(uuid.uuid4())
S3 = "s3://lake/trace"
DECLARED = (DeclaredOutput(DS, VER, "cryo_ingest.blocks:v1", 0, 10),)


def claims(datasets_uri: str = S3, org: str = ORG) -> CapabilityClaims:
    return CapabilityClaims(
        org_id=org,
        task_id=str(uuid.uuid4()),
        attempt=1,
        s3_write_prefixes=("s3://lake/scratch/t/1/", *output_prefixes(datasets_uri, DECLARED)),
    )


def pub(storage: StorageRef, **fields: object) -> DatasetPublication:
    base: dict[str, object] = dict(config_hash="cryo_ingest.blocks:v1", range_start=0, range_end=10)
    base.update(fields)
    return DatasetPublication(DS, VER, storage, **base)  # type: ignore[arg-type]


HOME = StorageRef(scheme="s3", bucket="lake", prefix=f"trace/datasets/{DS}/{VER}/")


def test_the_declared_output_at_its_own_s3_prefix_is_allowed() -> None:
    check_publications([pub(HOME)], DECLARED, ORG, claims(), S3)
    check_publications([pub(StorageRef("s3", f"/trace/datasets/{DS}/{VER}", "lake"))], DECLARED, ORG, claims(), S3)


@pytest.mark.parametrize(
    "storage",
    [
        StorageRef(scheme="s3", bucket="other", prefix=f"trace/datasets/{DS}/{VER}/"),
        StorageRef(scheme="s3", bucket="lake", prefix=f"trace/datasets/{DS}/{VER}/../{VER}/"),
        StorageRef(scheme="s3", bucket="lake", prefix=f"trace//datasets/{DS}/{VER}/"),
        StorageRef(scheme="s3", bucket="lake", prefix="scratch/t/1/"),
        StorageRef(scheme="file", prefix=f"/trace/datasets/{DS}/{VER}/"),
        StorageRef(scheme="s3", bucket="lake", prefix=f"trace/datasets/{DS}/{VER}/", glob="../*.parquet"),
    ],
)
def test_storage_anywhere_else_is_outside(storage: StorageRef) -> None:
    with pytest.raises(PermissionDenied) as exc:
        check_publications([pub(storage)], DECLARED, ORG, claims(), S3)
    assert exc.value.reason == OUTSIDE_PREFIX


def test_a_token_without_the_versions_prefix_is_outside() -> None:
    narrow = CapabilityClaims(org_id=ORG, task_id="t", attempt=1, s3_write_prefixes=("s3://lake/scratch/t/1/",))
    with pytest.raises(PermissionDenied) as exc:
        check_publications([pub(HOME)], DECLARED, ORG, narrow, S3)
    assert exc.value.reason == OUTSIDE_PREFIX


def test_no_datasets_location_fails_closed() -> None:
    assert output_prefixes("", DECLARED) == ()
    with pytest.raises(PermissionDenied) as exc:
        check_publications([pub(HOME)], DECLARED, ORG, claims(), "")
    assert exc.value.reason == OUTSIDE_PREFIX


@pytest.mark.parametrize(
    "publication, declared, org",
    [
        (pub(HOME), (), ORG),  # nothing declared
        (pub(HOME, range_end=11), DECLARED, ORG),
        (pub(HOME, config_hash=""), DECLARED, ORG),
        (DatasetPublication(str(uuid.uuid4()), VER, HOME, "cryo_ingest.blocks:v1", 0, 10), DECLARED, ORG),
        (pub(HOME), DECLARED, str(uuid.uuid4())),  # the token's org is not the task's
    ],
)
def test_anything_but_a_declared_output_is_not_allowed(
    publication: DatasetPublication, declared: tuple[DeclaredOutput, ...], org: str
) -> None:
    with pytest.raises(PermissionDenied) as exc:
        check_publications([publication], declared, org, claims(), S3)
    assert exc.value.reason == NOT_ALLOWED
