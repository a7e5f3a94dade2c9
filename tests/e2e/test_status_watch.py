"""`trace status --watch` against a real `trace lite up` syncing a real anvil chain with
Cryo: not on a terminal it prints the status only when it changes (with blocks per
second and time left) and ends once the job is complete; `trace lite up`'s own view is
the same."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.anvil import AnvilNode
from trace_platform.lite.embedded_pg import ROOT_CLUSTERS, cluster_dir

from .conftest import all_output, spawn, wait_for_line

SYNC = (
    "kind: chain_sync\nname: watched\nchain_id: 31337\n"
    "mode:\n  kind: fixed_target\n  from_block: 0\n  to_block: 200\n"
    "streams:\n  blocks:\n    cryo_dataset_name: blocks\n    rpc_pool: local\n"
    "    chunk_size: 10\n    max_inflight: 1\n"
)


def test_status_watch_prints_changes_with_rate_and_ends_when_complete(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    node = AnvilNode.start()
    try:
        # Long enough to last more than the rate window's one-second minimum span: with the
        # planner woken by each completion, 60 blocks sync in well under a second.
        node.mine(210)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
        env.update(TRACE_DATA_DIR=str(tmp_path / "lite"), TRACE_RPC_POOL_LOCAL_URL=node.url)
        lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
        procs.append(lite)
        env["TRACE_ADDR"] = wait_for_line(lite, r"trace lite is up on (\S+)", timeout=60, stream="stdout")
        spec = tmp_path / "sync.yaml"
        spec.write_text(SYNC)
        cli = [sys.executable, "-m", "trace_platform"]
        applied = subprocess.run([*cli, "apply", "-f", str(spec)], env=env, capture_output=True, text=True, timeout=60)
        assert applied.returncode == 0, applied.stderr
        watched = subprocess.run(
            [*cli, "status", "watched", "--watch", "--interval", "0.2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert watched.returncode == 0, watched.stderr
        out = watched.stdout
        assert "\x1b[" not in out  # a pipe gets plain lines, no redraw codes
        assert "200/200 (100%)" in out and "eta done" in out, out
        blocks = [line for line in out.splitlines() if line.startswith("  watched.blocks") and "blk/s" in line]
        # One block per change of status (ranges landing: 20 at most), never one per poll.
        assert 1 <= len(blocks) <= 21, out
        # `trace lite up` in the foreground shows the same view of the same job.
        wait_for_line(lite, r"watched\.blocks .*200/200 \(100%\)", timeout=30, stream="stdout")
        lite.terminate()
        lite.wait(timeout=30)
        assert "\x1b[" not in "".join(all_output(lite, "stdout"))
    finally:
        node.stop()
        cluster = cluster_dir(tmp_path / "lite")  # as root: under /var/lib/trace-lite, not tmp_path
        if cluster.parent == ROOT_CLUSTERS:
            shutil.rmtree(cluster, ignore_errors=True)
