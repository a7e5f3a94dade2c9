"""`pip install` of the package alone (no extras) into a fresh virtual environment gives a
`trace` that runs the main job: `trace lite up` on embedded defaults, `trace apply` of a
chain_sync job, real Cryo over a real anvil chain, `trace status` and `trace query`, with
no warning on start.

Cost: the project's wheel is built each run (seconds); its dependencies come from a
wheelhouse cached under the system temp dir (``$TMPDIR/trace-plain-install-wheels``),
filled by ``pip download`` on the first run or when the dependencies change, so a fresh
venv installs offline from it (about 30 s here; about 60 s more on the first run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.anvil import AnvilNode, free_port
from tests.udf_fixtures import shared_tmp_dir

from .conftest import LineReader

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = Path(
    os.environ.get("TRACE_PLAIN_INSTALL_WHEELS", Path(tempfile.gettempdir()) / "trace-plain-install-wheels")
)
BLOCKS = 24

SYNC_YAML = f"""kind: chain_sync
name: plain
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: {BLOCKS}
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: local
    chunk_size: 8
    max_inflight: 2
"""

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def _pip(python: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _plain_venv(tmp_path: Path) -> Path:
    """A fresh venv holding the package and its runtime dependencies only."""
    source = tmp_path / "source"  # only what a source distribution holds: no .venv, no node_modules
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copy(REPO / "README.md", source)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheel"
    built = _pip(
        Path(sys.executable), "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("trace_platform-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    offline = ("install", "-q", "--no-compile", "--no-index", "--find-links", str(WHEELHOUSE), str(wheel))
    if _pip(python, *offline).returncode != 0:  # first run, or the dependencies changed
        WHEELHOUSE.mkdir(parents=True, exist_ok=True)
        fetched = _pip(python, "download", "-q", "-d", str(WHEELHOUSE), str(wheel))
        assert fetched.returncode == 0, fetched.stderr[-3000:]
        installed = _pip(python, *offline)
        assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _env(venv: Path, data_dir: Path, anvil_url: str) -> dict[str, str]:
    # Nothing of the checkout's environment: no dev venv on PATH, no PYTHONPATH, no XDG_RUNTIME_DIR.
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        TRACE_DATA_DIR=str(data_dir),
        TRACE_RPC_POOL_LOCAL_URL=anvil_url,
    )
    return env


def _trace(venv: Path, env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "trace"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def base() -> Iterator[Path]:
    """Traversable by others (0711): as root the embedded PostgreSQL runs as the pgserver
    user, which must reach the venv's PostgreSQL binaries (pytest's tmp_path is 0700)."""
    path = shared_tmp_dir("trace-plain-install-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_plain_install_syncs_a_chain_with_cryo(base: Path) -> None:
    tmp_path = base
    venv = _plain_venv(tmp_path)
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import cryo, rich, importlib.util as u; print(u.find_spec('pytest'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr  # Cryo and rich came with the package
    assert probe.stdout.strip() == "None"  # and no development extra did

    node = AnvilNode.start()
    data_dir = tmp_path / "lite"
    work = tmp_path / "work"  # a directory with no node_modules and no checkout
    work.mkdir()
    lite: subprocess.Popen[str] | None = None
    try:
        node.mine(BLOCKS)
        env = _env(venv, data_dir, node.url)
        addr = f"127.0.0.1:{free_port()}"
        lite = subprocess.Popen(
            [str(venv / "bin" / "trace"), "lite", "up", "--listen", addr],
            env=env,
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert lite.stdout is not None and lite.stderr is not None
        out, err = LineReader(lite.stdout), LineReader(lite.stderr)
        try:
            out.wait_for(r"trace lite is up on (\S+)", timeout=120)
        except AssertionError:
            err.thread.join(timeout=1)
            raise AssertionError(f"lite did not start: {''.join(err.everything)[-3000:]}") from None
        (work / "plain.yaml").write_text(SYNC_YAML)
        env["TRACE_ADDR"] = addr
        applied = _trace(venv, env, work, "apply", "-f", "plain.yaml")
        assert applied.returncode == 0, applied.stderr + "".join(err.everything)[-4000:]
        deadline = time.monotonic() + 180
        while True:
            shown = _trace(venv, env, work, "status", "plain", "--json")
            assert shown.returncode == 0, shown.stderr
            (job,) = json.loads(shown.stdout)["jobs"]
            if job["completed"]:
                break
            last_errors = [s["last_error"] for s in job["streams"] if s["last_error"]]
            assert time.monotonic() < deadline, f"sync did not finish: {job}; errors {last_errors}"
            time.sleep(1)
        (stream,) = job["streams"]
        assert int(stream["completed_blocks"]) == BLOCKS
        counted = _trace(
            venv, env, work, "query", "--dataset", "plain.blocks", "--json", "SELECT count(*) AS n FROM dataset"
        )
        assert counted.returncode == 0, counted.stderr
        assert str(BLOCKS) in counted.stdout
        lite.send_signal(signal.SIGINT)
        assert lite.wait(timeout=60) == 0
        err.thread.join(timeout=5)
        # An ordinary start and stop says nothing on stderr: no XDG_RUNTIME_DIR (or any) warning.
        warnings = [line for line in err.everything if "warning" in line.lower()]
        assert warnings == [], "".join(err.everything)[-3000:]
    finally:
        if lite is not None and lite.poll() is None:
            lite.kill()
            lite.wait(timeout=10)
        node.stop()
        _remove_root_cluster(data_dir)


def _remove_root_cluster(data_dir: Path) -> None:
    """As root Lite keeps its cluster outside the data dir: remove this test's."""
    from trace_platform.lite import embedded_pg

    cluster_dir = getattr(embedded_pg, "cluster_dir", None)
    root = getattr(embedded_pg, "ROOT_CLUSTERS", None)
    if cluster_dir is not None and root is not None:
        cluster = cluster_dir(data_dir)
        if cluster.parent == root:
            shutil.rmtree(cluster, ignore_errors=True)
