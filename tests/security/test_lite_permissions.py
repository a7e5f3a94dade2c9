"""Attack: Lite started as root loosened permissions (issue 13, hole 9). pgserver added
o+rx to every parent of the data directory, the home directory included, and objects
were written world-readable.

The real ``trace lite up --demo`` (embedded PostgreSQL as the ``pgserver`` user, anvil,
chain_sync with Cryo writing Parquet and manifests) runs with its data directory in a
fresh home-like tree; every parent keeps its mode, and nothing it wrote under the data
directory is readable by others.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.lite.embedded_pg import ROOT_CLUSTERS, cluster_dir

pytestmark = pytest.mark.integration


def modes_of_parents(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(os.stat(p).st_mode) for p in path.parents}


def loose(root: Path) -> list[str]:
    """Every file and directory under ``root`` that a group or other may read, write or enter."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            if not stat.S_ISLNK(os.lstat(p).st_mode) and mode & 0o077:
                found.append(f"{p.relative_to(root)} {oct(mode)}")
    return found


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() != 0, reason="the hole is Lite started as root")
def test_lite_as_root_leaves_every_parent_as_it_was_and_writes_for_itself_alone(tmp_path: Path) -> None:
    home = tmp_path / "home" / "ada"
    home.mkdir(parents=True)
    os.chmod(tmp_path / "home", 0o751)
    os.chmod(home, 0o700)  # a home directory as useradd makes it
    (home / ".trace").mkdir(mode=0o700)
    data_dir = home / ".trace" / "lite"
    before = modes_of_parents(data_dir)
    system_before = modes_of_parents(ROOT_CLUSTERS)
    cluster = cluster_dir(data_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(HOME=str(home), TRACE_DATA_DIR=str(data_dir))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "trace_platform", "lite", "up", "--demo", "--listen", "127.0.0.1:0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert modes_of_parents(data_dir) == before  # the home directory included: still 0700

        # The cluster lives outside the home, where pgserver can reach it without any
        # chmod: root-owned 0711 base, the cluster 0700 and owned by the pgserver user.
        assert cluster.parent == ROOT_CLUSTERS and (cluster / "PG_VERSION").exists()
        assert not cluster.is_relative_to(home)
        assert stat.S_IMODE(os.stat(ROOT_CLUSTERS).st_mode) == 0o711 and os.stat(ROOT_CLUSTERS).st_uid == 0
        assert stat.S_IMODE(os.stat(cluster).st_mode) == 0o700
        assert modes_of_parents(ROOT_CLUSTERS) == system_before  # /var/lib, /var, / untouched too

        # Everything the platform wrote (credentials, Parquet, manifests, scratch) is its own.
        assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
        objects = data_dir / "objects"
        written = [p for p in objects.rglob("*") if p.is_file()]
        assert any(p.suffix == ".parquet" for p in written) and any(p.name.endswith(".json") for p in written)
        assert loose(objects) == []
        # Elsewhere in the (0700) data directory: no file anyone else could read.
        assert [e for e in loose(data_dir) if not e.startswith("staging ")] == []
    finally:
        shutil.rmtree(cluster, ignore_errors=True)


def test_local_objects_are_private_whatever_the_umask(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store = LocalObjectStore([root])
    with umask(0):  # the most permissive umask: modes must come from the store itself
        store.put_bytes(f"file://{root}/datasets/u/v1/part-0.parquet", b"PAR1")
        store.put_bytes(f"file://{root}/datasets/u/v1/manifest.json", b"{}")
        store.put_bytes(f"file://{root}/datasets/u/v1/manifest.json", b'{"again": 1}')  # overwrite
    assert loose(root) == []
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o700
    assert (root / "datasets/u/v1/manifest.json").read_bytes() == b'{"again": 1}'
    assert sorted(p.name for p in (root / "datasets/u/v1").iterdir()) == ["manifest.json", "part-0.parquet"]


def test_an_existing_object_directory_keeps_its_mode(tmp_path: Path) -> None:
    """The store tightens what it creates, never what it found."""
    root = tmp_path / "shared"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    LocalObjectStore([root]).put_bytes(f"file://{root}/a/b.json", b"{}")
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(root / "a" / "b.json").st_mode) == 0o600
