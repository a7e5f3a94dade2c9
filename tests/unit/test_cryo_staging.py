"""Cryo staging without a node: private directories, stale clean-up, and output checks."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trace_platform.adapters.extract.cryo_runner import (
    ArtifactCaps,
    CryoRequest,
    CryoRunner,
    ensure_private_dir,
    remove_stale_staging,
)
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.planner import BlockRange

NOW = 2_000_000_000.0


def make_attempt(root: Path, age: float, task: str | None = None, attempt: str = "1") -> Path:
    d = root / (task or str(uuid.uuid4())) / attempt
    d.mkdir(parents=True)
    (d / "x.parquet").write_bytes(b"x")
    os.utime(d, (NOW - age, NOW - age))
    return d


def test_remove_stale_staging_removes_only_old_staging_dirs(tmp_path: Path) -> None:
    old = make_attempt(tmp_path, age=7200)
    fresh = make_attempt(tmp_path, age=10)
    not_ours = tmp_path / "my-notes"
    not_ours.mkdir()
    os.utime(not_ours, (0, 0))
    odd_attempt = make_attempt(tmp_path, age=7200, attempt="latest")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / str(uuid.uuid4())).symlink_to(target)
    removed = remove_stale_staging(tmp_path, max_age_seconds=3600, now=NOW)
    assert removed == [old]
    assert not old.parent.exists()  # the emptied task directory goes too
    assert fresh.exists() and not_ours.exists() and odd_attempt.exists() and target.exists()
    assert remove_stale_staging(tmp_path / "missing", 0, now=NOW) == []
    assert remove_stale_staging(tmp_path, max_age_seconds=0, now=NOW) == [fresh]


def test_private_dirs(tmp_path: Path) -> None:
    d = ensure_private_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    assert stat.S_IMODE(ensure_private_dir(loose).stat().st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(loose)
    with pytest.raises(FailedPrecondition):
        ensure_private_dir(link)


def test_staging_dir_is_keyed_by_task_and_attempt(tmp_path: Path) -> None:
    runner = CryoRunner(tmp_path)
    task = str(uuid.uuid4())
    assert runner.staging_dir(task.upper(), 2) == tmp_path / task / "2"
    for bad_task, bad_attempt in (("../etc", 1), (task, 0), (task, -1)):
        with pytest.raises(ValueError):
            runner.staging_dir(bad_task, bad_attempt)


def parquet(path: Path, chain_id: int = 31337, rows: int = 3) -> None:
    pq.write_table(pa.table({"block_number": list(range(rows)), "chain_id": [chain_id] * rows}), path)


def collect(tmp_path: Path, caps: ArtifactCaps | None = None, chain_id: int | None = 31337) -> list[str]:
    req = CryoRequest(str(uuid.uuid4()), 1, "blocks", BlockRange(0, 200), "http://unused", chain_id=chain_id)
    files = CryoRunner(tmp_path, caps=caps)._collect(req, tmp_path)
    return [f.path.name for f in files]


def test_collect_accepts_files_that_tile_the_range(tmp_path: Path) -> None:
    parquet(tmp_path / "network_31337__blocks__00000100_to_00000199.parquet")
    parquet(tmp_path / "network_31337__blocks__00000000_to_00000099.parquet", rows=0)
    (tmp_path / ".cryo").mkdir()
    assert collect(tmp_path) == [
        "network_31337__blocks__00000000_to_00000099.parquet",
        "network_31337__blocks__00000100_to_00000199.parquet",
    ]


@pytest.mark.parametrize(
    "names, reason",
    [
        (["network_31337__blocks__00000000_to_00000099.parquet"], "CRYO_UNEXPECTED_OUTPUT"),  # a gap
        (["network_31337__blocks__00000000_to_00000200.parquet"], "CRYO_UNEXPECTED_OUTPUT"),  # past the end
        (["network_31337__logs__00000000_to_00000199.parquet"], "CRYO_UNEXPECTED_OUTPUT"),  # another dataset
        (["network_31337__blocks__00000000_to_00000199.csv"], "CRYO_UNEXPECTED_OUTPUT"),
        ([], "CRYO_UNEXPECTED_OUTPUT"),
        (
            [
                "network_31337__blocks__00000000_to_00000149.parquet",
                "network_31337__blocks__00000100_to_00000199.parquet",
            ],
            "CRYO_UNEXPECTED_OUTPUT",  # overlap
        ),
    ],
)
def test_collect_refuses_bad_output(tmp_path: Path, names: list[str], reason: str) -> None:
    for name in names:
        parquet(tmp_path / name)
    with pytest.raises(FailedPrecondition) as err:
        collect(tmp_path)
    assert err.value.reason == reason and err.value.metadata["category"] == "output"


def test_collect_checks_chain_caps_and_parquet(tmp_path: Path) -> None:
    name = "network_31337__blocks__00000000_to_00000199.parquet"
    parquet(tmp_path / name, chain_id=1)
    with pytest.raises(FailedPrecondition) as err:
        collect(tmp_path)
    assert err.value.reason == "CHAIN_ID_MISMATCH"
    assert collect(tmp_path, chain_id=None) == [name]
    with pytest.raises(FailedPrecondition) as err:
        collect(tmp_path, caps=ArtifactCaps(max_file_bytes=10), chain_id=None)
    assert err.value.reason == "ARTIFACT_CAP_EXCEEDED"
    (tmp_path / name).write_bytes(b"not parquet")
    with pytest.raises(FailedPrecondition) as err:
        collect(tmp_path, chain_id=None)
    assert err.value.reason == "CRYO_UNEXPECTED_OUTPUT"
