"""Red-team variants of issue 13's sandbox wall (hole 1), each from inside a real
sandboxed run (the real LocalInvoker, bubblewrap namespaces, the per-invocation uid).

- HOME was the run directory's ``home/`` bound read-write from the host's disk: the file
  size rlimit caps one file, not their number, so a UDF could fill the host's disk for as
  long as it ran. HOME must be bounded like the private /tmp.
- No descriptor of the invoker reaches the UDF: only stdin, stdout and stderr are open.
- The memory limit was RLIMIT_AS, per process: a UDF forking children multiplied it by
  up to ``max_processes``. The run's own memory cgroup holds every process to one limit.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.udf_fixtures import UdfLab, invocation, shared_tmp_dir
from trace_platform.adapters.invoker import cgroups
from trace_platform.adapters.invoker.base import InvocationResult


@pytest.fixture(scope="module")
def lab() -> Iterator[UdfLab]:
    bundles, runs = shared_tmp_dir("trace-bundles-"), shared_tmp_dir("trace-runs-")
    yield UdfLab(Ed25519PrivateKey.generate(), bundles, runs)
    shutil.rmtree(bundles, ignore_errors=True)
    shutil.rmtree(runs, ignore_errors=True)


def _result(res: InvocationResult) -> dict:  # type: ignore[type-arg]
    assert res.ok, res
    value = json.loads(res.result_json)
    assert isinstance(value, dict)
    return value


async def test_home_is_bounded_and_not_the_hosts_disk(lab: UdfLab) -> None:
    """Many files, each under the file size rlimit, stop at tmpfs_bytes in HOME too."""
    url = lab.python(
        "import errno, os\n"
        "def main(event):\n"
        "    home, written = os.environ['HOME'], 0\n"
        "    try:\n"
        "        for i in range(24):\n"
        "            with open(os.path.join(home, f'fill-{i}'), 'wb') as f:\n"
        "                f.write(b'x' * (1 << 20))\n"
        "            written += 1\n"
        "    except OSError as e:\n"
        "        return {'written': written, 'error': errno.errorcode[e.errno]}\n"
        "    return {'written': written, 'error': ''}\n"
    )
    invoker = lab.invoker(tmpfs_bytes=8 * 1024 * 1024)
    got = _result(await invoker.invoke(invocation(url)))
    assert got["error"] == "ENOSPC" and got["written"] <= 8, got
    assert list(lab.runs.iterdir()) == []  # and nothing is left on the host


async def test_home_still_works_for_a_udf(lab: UdfLab) -> None:
    url = lab.python(
        "import os\n"
        "def main(event):\n"
        "    p = os.path.join(os.environ['HOME'], '.cache', 'x')\n"
        "    os.makedirs(os.path.dirname(p))\n"
        "    open(p, 'w').write('ok')\n"
        "    return {'read': open(p).read(), 'mode': oct(os.stat(os.environ['HOME']).st_mode & 0o777)}\n"
    )
    got = _result(await lab.invoker().invoke(invocation(url)))
    assert got["read"] == "ok", got


async def test_only_the_standard_descriptors_reach_the_udf(lab: UdfLab) -> None:
    """close_fds: no socket, pipe or file of the invoker (or bwrap) is inherited."""
    url = lab.python(
        "import os\n"
        "def main(event):\n"
        "    fds = [int(f) for f in os.listdir('/proc/self/fd')]\n"  # one is listdir's own
        "    live = [f for f in fds if os.path.exists(f'/proc/self/fd/{f}')]\n"
        "    return {'fds': {f: os.readlink(f'/proc/self/fd/{f}') for f in live}}\n"
    )
    got = _result(await lab.invoker().invoke(invocation(url)))
    fds = {int(k): v for k, v in got["fds"].items()}
    # 0-2 and the bootstrap's dup of stdout (fd 3: the result channel) are the run's pipes.
    assert not any(v.startswith(("socket:", "anon_inode:")) for v in fds.values()), got
    assert all(f <= 3 and v.startswith("pipe:") for f, v in fds.items()), got
    assert len(set(fds.values())) == 3, got  # stdin, stdout, stderr: nothing else


FORK_AND_FILL = (
    "import os, time\n"
    "def main(event):\n"
    "    kids = []\n"
    "    for i in range(6):\n"
    "        r, w = os.pipe()\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            os.close(r)\n"
    "            b = bytearray(200 * 1024 * 1024)\n"
    "            for j in range(0, len(b), 4096):\n"
    "                b[j] = 1\n"
    "            os.write(w, b'ok')\n"
    "            time.sleep(2)\n"
    "            os._exit(0)\n"
    "        os.close(w)\n"
    "        kids.append((pid, r))\n"
    "    got = [os.read(r, 2) for _, r in kids]\n"
    "    for pid, _ in kids:\n"
    "        os.waitpid(pid, 0)\n"
    "    return {'filled': sum(g == b'ok' for g in got)}\n"
)


async def test_the_memory_limit_holds_for_the_whole_run_not_each_process(
    lab: UdfLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RLIMIT_AS is per process: six children of 200 MB each all ran under a 256 MB
    limit (1.2 GB resident). The run's cgroup holds all of them to the one limit, and
    is removed with the run."""
    made: list[Path] = []
    create = cgroups.MemoryCgroups.create

    def spy(self: cgroups.MemoryCgroups, name: str, limit_bytes: int) -> cgroups.RunCgroup:
        run = create(self, name, limit_bytes)
        made.append(run.path)
        return run

    monkeypatch.setattr(cgroups.MemoryCgroups, "create", spy)
    limit = 256 * 1024 * 1024
    res = await lab.invoker(memory_bytes=limit).invoke(invocation(lab.python(FORK_AND_FILL)))
    if res.ok:
        assert json.loads(res.result_json)["filled"] * 200 * 1024 * 1024 <= limit, res.result_json
    else:
        assert res.error_reason == "UDF_KILLED", res
    assert len(made) == 1 and not _exists(made[0])


def _exists(path: Path) -> bool:
    return path.exists()


async def test_a_run_within_its_memory_limit_still_forks(lab: UdfLab) -> None:
    res = await lab.invoker(memory_bytes=2 * 1024 * 1024 * 1024).invoke(invocation(lab.python(FORK_AND_FILL)))
    assert _result(res)["filled"] == 6
