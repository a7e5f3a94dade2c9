"""Cold-start overhead of the Lite invoker, per runtime, for a trivial bundle.

For each runtime four timings, interleaved in one run (N runs each, p50/p95 in ms):

- ``bare``: ``subprocess.run`` of the same interpreter doing nothing (``python -I -B -c
  pass``, ``node -e 0``; for rust the bootstrap binary itself with ``{}`` on stdin);
- ``old``: the trivial handler with the runtime shim through the wrapper before the
  mount namespace (``unshare --net --pid --fork --mount-proc --kill-child``, prlimit,
  setpriv): the baseline, kept here only;
- ``mountns``: the same through today's sandbox (bubblewrap: mount, network, pid, ipc
  and uts namespaces with the minimal root, then one ``sh`` for the rlimits); no bundle
  handling;
- ``old+uid`` and ``mountns+uid`` (as root): both again with the switch to a sandbox uid
  that a real invoke makes (``setpriv --reuid ...``; without it the new chain needs no
  setpriv at all, bwrap sets no_new_privs);
- ``invoke``: the whole ``LocalInvoker.invoke``: copy + sha256, verify signature,
  extract, sandbox (with the per-invocation uid and the task bridge off), run, classify,
  clean up.

The target: ``mountns`` p50 at most 1.2 x ``old`` p50.

    python bench/invoker_cold_start.py [--runs 30] [--runtimes python,node,rust]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trace_platform.adapters.invoker.base import Invocation
from trace_platform.adapters.invoker.local import LocalInvoker
from trace_platform.adapters.invoker.mountns import RunMounts, write_etc
from trace_platform.adapters.invoker.runtimes import Executables, bare_argv, runtime_argv
from trace_platform.adapters.invoker.sandbox import SandboxPlan, UidPool, limits_argv, run_bounded, wrapper_argv
from trace_platform.core.bundle_manifest import TrustedKeys
from trace_platform.core.bundles import build_bundle, extract_bundle
from trace_platform.core.config import InvokerSettings, UdfLimits

RUST_MAIN = """use std::io::{Read, Write};
fn main() {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).unwrap();
    std::io::stdout().write_all(b"{\\"ok\\":true}").unwrap();
}
"""


def write_sources(root: Path, runtimes: list[str]) -> dict[str, tuple[Path, str]]:
    out: dict[str, tuple[Path, str]] = {}
    if "python" in runtimes:
        (root / "py").mkdir()
        (root / "py" / "handler.py").write_text("def main(event):\n    return {'ok': True}\n")
        out["python"] = (root / "py", "handler.main")
    if "node" in runtimes:
        (root / "node").mkdir()
        (root / "node" / "index.js").write_text("exports.handler = async () => ({ ok: true });\n")
        out["node"] = (root / "node", "index.handler")
    if "rust" in runtimes and shutil.which("cargo"):
        crate = root / "crate"
        (crate / "src").mkdir(parents=True)
        (crate / "Cargo.toml").write_text('[package]\nname = "bootstrap"\nversion = "0.1.0"\nedition = "2021"\n')
        (crate / "src" / "main.rs").write_text(RUST_MAIN)
        subprocess.run(["cargo", "build", "--release", "--offline", "--quiet"], cwd=crate, check=True)
        (root / "rust").mkdir()
        shutil.copy(crate / "target" / "release" / "bootstrap", root / "rust" / "bootstrap")
        out["rust"] = (root / "rust", "bootstrap")
    return out


def bare_run(argv: list[str]) -> float:
    """The baseline the brief asks for: a plain blocking ``subprocess.run``."""
    t = time.perf_counter()
    subprocess.run(argv, input=b"{}", capture_output=True, check=True)
    return time.perf_counter() - t


def make_workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="trace-bench-", dir="/tmp"))
    work.chmod(0o711)  # the per-invocation sandbox uid must traverse it
    return work


def remove_workdir(work: Path) -> None:
    for path in work.rglob("*"):
        if path.is_dir():
            path.chmod(0o700)
    shutil.rmtree(work, ignore_errors=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def pre_mountns_argv(plan: SandboxPlan, limits: UdfLimits, uid: int | None = None) -> list[str]:
    """The wrapper as it was before the mount namespace (as root): the baseline only."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed for the baseline"
    return [unshare, "--net", "--pid", "--fork", "--mount-proc", "--kill-child", "--", *limits_argv(plan, limits, uid)]


def invocation(url: str) -> Invocation:
    return Invocation(str(uuid.uuid4()), 1, str(uuid.uuid4()), datetime.now(UTC) + timedelta(minutes=5), "cap", url)


async def measure(runtime: str, src: Path, entry: str, work: Path, runs: int) -> dict[str, list[float]]:
    key = Ed25519PrivateKey.generate()
    archive = work / f"{runtime}.zip"
    build_bundle(src, runtime, entry, key, archive)
    trusted = TrustedKeys.of(key.public_key())
    settings = InvokerSettings()
    invoker = LocalInvoker(settings, trusted, bundle_roots=(work,), runs_dir=work / "runs")
    exes = Executables(python=settings.python, node=settings.node)
    extracted = extract_bundle(archive, trusted, parent=work, root_mode=0o555)
    limits = settings.limits
    assert invoker.plan.isolated, invoker.plan.unavailable
    home, etc = work / f"{runtime}-home", work / f"{runtime}-etc"
    home.mkdir()
    write_etc(etc, os.getuid(), home)
    mounts = RunMounts(extracted.root, home, etc)
    bare = bare_argv(runtime, exes) if runtime != "rust" else [str(extracted.root / "bootstrap")]
    command = runtime_argv(runtime, entry, extracted.root, exes)
    wrapped = {
        "old": pre_mountns_argv(invoker.plan, limits) + command,
        "mountns": wrapper_argv(invoker.plan, limits, None, mounts) + command,
    }
    # A uid of its own, away from the invoker's pool (whose invokes run beside these).
    uids = UidPool(settings.sandbox_uid_base + settings.sandbox_uid_count, 16)
    uid = uids.acquire() if invoker.plan.switch_uid else None
    if uid is not None:
        wrapped["old+uid"] = pre_mountns_argv(invoker.plan, limits, uid) + command
        wrapped["mountns+uid"] = wrapper_argv(invoker.plan, limits, uid, mounts) + command
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    times: dict[str, list[float]] = {name: [] for name in ("bare", *wrapped, "invoke")}
    for i in range(runs):
        times["bare"].append(bare_run(bare))
        # Alternate which wrapper goes first, so neither always runs on a warmer cache.
        for name in list(wrapped) if i % 2 == 0 else reversed(wrapped):
            t = time.perf_counter()
            out = await run_bounded(wrapped[name], b"{}", env, extracted.root, limits, 30)
            assert out.returncode == 0, (name, out.stderr_tail)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        res = await invoker.invoke(invocation(f"file://{archive}"))
        assert res.ok, (runtime, res.error_reason, res.exit_code, res.stderr_tail)
        times["invoke"].append(time.perf_counter() - t)
    if uid is not None:
        uids.release(uid)
    print(f"# {runtime}: sandbox = {invoker.plan.describe()}")
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--runtimes", default="python,node,rust")
    opts = parser.parse_args()
    work = make_workdir()
    try:
        sources = write_sources(work, opts.runtimes.split(","))
        rows = []
        for runtime, (src, entry) in sources.items():
            times = await measure(runtime, src, entry, work, opts.runs)
            rows.append((runtime, times))
        keys = [k for k in ("bare", "old", "mountns", "old+uid", "mountns+uid", "invoke") if k in rows[0][1]]
        uid_col = "old+uid" in keys
        head = "".join(f"{k + ' p50/p95':>22}" for k in keys) + f"{'mountns/old':>13}"
        print(f"{'runtime':8}" + head + (f"{'(+uid)':>8}" if uid_col else "") + "   (ms)")
        for runtime, t in rows:
            cols = [f"{pct(t[k], 0.5):7.1f}/{pct(t[k], 0.95):7.1f}" for k in keys]
            ratio = statistics.median(t["mountns"]) / statistics.median(t["old"])
            line = f"{runtime:8}" + "".join(f"{c:>22}" for c in cols) + f"{ratio:12.2f}x"
            if uid_col:
                line += f"{statistics.median(t['mountns+uid']) / statistics.median(t['old+uid']):7.2f}x"
            print(line)
        print(
            "overhead p50 (invoke - bare), ms:",
            {r: round(pct(t["invoke"], 0.5) - pct(t["bare"], 0.5), 1) for r, t in rows},
        )
    finally:
        remove_workdir(work)


if __name__ == "__main__":
    asyncio.run(main())
