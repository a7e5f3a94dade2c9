"""_manifest.json: round trip, version-addressed layout, and a strict parser for untrusted bytes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.manifest import (
    MANIFEST_NAME,
    ManifestObject,
    build_manifest,
    check_relative_key,
    derive_dataset_version,
    manifest_key,
    object_prefix,
    parse_manifest,
)

DS = str(uuid.uuid4())
VER = derive_dataset_version(DS, 0, 100, "cryo_ingest.blocks:v1")
OBJ = ManifestObject("network_31337__blocks__00000000_to_00000099.parquet", 1234, "a" * 64, 100)


def good() -> dict[str, Any]:
    return build_manifest(DS, VER, [OBJ]).to_dict()


def parse(doc: Any, **kwargs: str) -> None:
    parse_manifest(json.dumps(doc).encode(), **kwargs)


def test_layout_is_deterministic_and_version_addressed() -> None:
    assert object_prefix(DS, VER) == f"datasets/{DS}/{VER}/"
    assert object_prefix(DS.upper(), VER) == object_prefix(DS, VER)
    assert manifest_key(object_prefix(DS, VER)).endswith("/" + MANIFEST_NAME)
    assert derive_dataset_version(DS, 0, 100, "c") == derive_dataset_version(DS, 0, 100, "c")
    others = {derive_dataset_version(DS, 0, 101, "c"), derive_dataset_version(DS, 1, 100, "c")}
    others |= {derive_dataset_version(DS, 0, 100, "d"), derive_dataset_version(str(uuid.uuid4()), 0, 100, "c")}
    assert derive_dataset_version(DS, 0, 100, "c") not in others and len(others) == 4


def test_round_trip_and_full_keys_under_prefix() -> None:
    second = ManifestObject("network_31337__blocks__00000100_to_00000199.parquet", 1, "b" * 64, 0)
    m = build_manifest(DS, VER, [second, OBJ])
    assert [o.key for o in m.objects] == sorted([OBJ.key, second.key])
    back = parse_manifest(m.to_json(), expected_prefix=m.prefix, expected_dataset_uuid=DS, expected_dataset_version=VER)
    assert back == m
    assert all(k.startswith(m.prefix) for k in back.object_keys())
    assert m.to_json() == build_manifest(DS, VER, [OBJ, second]).to_json()  # byte-stable


def test_expected_values_must_match() -> None:
    data = build_manifest(DS, VER, [OBJ]).to_json()
    for kwargs in (
        {"expected_prefix": f"datasets/{DS}/{uuid.uuid4()}/"},
        {"expected_dataset_uuid": str(uuid.uuid4())},
        {"expected_dataset_version": str(uuid.uuid4())},
    ):
        with pytest.raises(FailedPrecondition) as err:
            parse_manifest(data, **kwargs)
        assert err.value.reason == "MANIFEST_MISMATCH"


@pytest.mark.parametrize(
    "key",
    [
        "../x.parquet",
        "a/../../x.parquet",
        "/etc/x.parquet",
        "./x.parquet",
        "a//x.parquet",
        "a/./x.parquet",
        "a\\x.parquet",
        "s3://bucket/x.parquet",
        "file:///x.parquet",
        "x.parquet/",
        ".hidden.parquet",
        "x%2e%2e.parquet/..",
        "",
        "x.csv",
        MANIFEST_NAME,
        "x" * 600 + ".parquet",
        "caf\u00e9.parquet",
        "x.parquet\n",
        "a\n/x.parquet",
    ],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    doc = good()
    doc["objects"][0]["key"] = key
    with pytest.raises(FailedPrecondition) as err:
        parse(doc)
    assert err.value.reason in {"MANIFEST_KEY_OUTSIDE_PREFIX", "MANIFEST_INVALID"}


def mutate(path: str, value: Any) -> dict[str, Any]:
    doc = good()
    target: Any = doc
    *parents, last = path.split(".")
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return doc


@pytest.mark.parametrize(
    "doc",
    [
        mutate("format", "other"),
        mutate("format_version", 2),
        mutate("format_version", True),
        mutate("extra", 1),
        mutate("prefix", KeyError),
        mutate("prefix", f"datasets/{DS}/{VER}/../"),
        mutate("prefix", f"datasets/{DS}/{uuid.uuid4()}/"),
        mutate("dataset_uuid", DS.upper()),
        mutate("dataset_uuid", "not-a-uuid"),
        mutate("objects", {}),
        mutate("objects.0.extra", 1),
        mutate("objects.0.sha256", "A" * 64),
        mutate("objects.0.sha256", "a" * 63),
        mutate("objects.0.sha256", "a" * 64 + "\n"),
        mutate("objects.0.size_bytes", -1),
        mutate("objects.0.size_bytes", 1.0),
        mutate("objects.0.row_count", "100"),
        mutate("objects.0.row_count", KeyError),
        {**good(), "objects": [good()["objects"][0]] * 2},
        [],
    ],
)
def test_malformed_manifests_are_refused(doc: Any) -> None:
    with pytest.raises(FailedPrecondition):
        parse(doc)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xfe",
        b"{",
        b'{"format": "a", "format": "b"}',
        json.dumps(good()).replace('"row_count": 100', '"row_count": NaN').encode(),
        b" " * (1024 * 1024 + 1),
    ],
)
def test_bad_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(FailedPrecondition) as err:
        parse_manifest(data)
    assert err.value.reason == "MANIFEST_INVALID"


@given(st.text(max_size=40))
def test_any_accepted_key_stays_under_the_prefix(key: str) -> None:
    try:
        check_relative_key(key)
    except FailedPrecondition:
        return
    parts = key.split("/")
    assert not key.startswith("/") and ".." not in parts and "." not in parts and "" not in parts
    assert "\\" not in key and ":" not in key and "%" not in key
