"""The Lite invoker runs real bundles (Python, Node, cargo-built Rust) in real sandboxed
subprocesses: scrubbed environment, no network but the bridged task endpoint, rlimits,
wall-clock timeout that kills everything, bounded output."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.udf_fixtures import NODE_CJS, UdfLab, build_rust_bootstrap, invocation, shared_tmp_dir
from trace_platform.adapters.invoker import base
from trace_platform.core.errors import TraceError


@pytest.fixture(scope="module")
def lab() -> Iterator[UdfLab]:
    bundles, runs = shared_tmp_dir("trace-bundles-"), shared_tmp_dir("trace-runs-")
    yield UdfLab(Ed25519PrivateKey.generate(), bundles, runs)
    shutil.rmtree(bundles, ignore_errors=True)
    shutil.rmtree(runs, ignore_errors=True)


@pytest.fixture(scope="module")
def rust_binary() -> Iterator[bytes]:
    work = shared_tmp_dir("trace-rust-")
    yield build_rust_bootstrap(work).read_bytes()
    shutil.rmtree(work, ignore_errors=True)


def result(res: base.InvocationResult) -> dict:  # type: ignore[type-arg]
    assert res.ok, (res.error_reason, res.exit_code, res.stderr_tail)
    value = json.loads(res.result_json)
    assert isinstance(value, dict)
    return value


def no_process_with(marker: str) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return False
        except OSError:
            continue
    return True


async def test_python_bundle(lab: UdfLab) -> None:
    url = lab.python(
        "import os\n"
        "def main(event, context):\n"
        "    print('stray print goes to stderr')\n"
        "    return {'sum': sum(event['inputs']['values']), 'task': context.task_id, 'cwd': os.getcwd()}\n"
    )
    inv = invocation(url, inputs={"values": [1, 2, 3]})
    res = await lab.invoker().invoke(inv)
    got = result(res)
    assert got["sum"] == 6 and got["task"] == inv.task_id
    assert "stray print goes to stderr" in res.stderr_tail
    assert os.listdir(lab.runs) == [], "run directory not removed"


async def test_python_async_handler_and_package_entrypoint(lab: UdfLab) -> None:
    files = {
        "pkg/__init__.py": b"",
        "pkg/udf.py": b"async def run(event, context):\n    return {'attempt': context.attempt, 'async': True}\n",
    }
    url = lab.bundle("python", "pkg.udf.run", files)
    assert result(await lab.invoker().invoke(invocation(url, attempt=2))) == {"attempt": 2, "async": True}


async def test_node_bundles_cjs_and_async_esm(lab: UdfLab) -> None:
    cjs = lab.bundle("node", "lib/index.handler", {"lib/index.js": NODE_CJS})
    res = await lab.invoker().invoke(invocation(cjs, inputs={"values": [4, 5]}))
    assert result(res)["sum"] == 9 and "stray console.log" in res.stderr_tail
    esm = lab.bundle(
        "node", "main.handler", {"main.mjs": b"export async function handler(e) { return {esm: e.attempt}; }"}
    )
    assert result(await lab.invoker().invoke(invocation(esm, attempt=3))) == {"esm": 3}


async def test_rust_bootstrap_bundle(lab: UdfLab, rust_binary: bytes) -> None:
    url = lab.bundle("rust", "bootstrap", {"bootstrap": rust_binary}, executables=("bootstrap",))
    inv = invocation(url)
    got = result(await lab.invoker().invoke(inv))
    assert got["runtime"] == "rust" and got["task_id"] == inv.task_id and got["input_bytes"] > 50
    assert got["env_keys"] == 4  # PATH HOME LANG TRACE_TASK_CAPABILITY: nothing inherited


async def test_udf_sees_only_its_token_not_platform_secrets(lab: UdfLab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACE_DATABASE_URL", "postgresql://postgres:secret@127.0.0.1/trace")
    monkeypatch.setenv("TRACE_WORKER_TOKEN", "worker-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    url = lab.python(
        "import os\n"
        "def main(event):\n"
        "    leaks = {}\n"
        "    for pid in (event['config']['parent'], 1, os.getppid()):\n"
        "        try:\n"
        "            leaks[str(pid)] = open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1')\n"
        "        except OSError as e:\n"
        "            leaks[str(pid)] = 'denied:' + type(e).__name__\n"
        "    return {'env': dict(os.environ), 'leaks': leaks}\n"
    )
    inv = invocation(url, config={"parent": os.getpid()})
    got = result(await lab.invoker(task_endpoint="127.0.0.1:1").invoke(inv))
    assert set(got["env"]) == {"PATH", "HOME", "LANG", "TRACE_TASK_CAPABILITY", "TRACE_TASK_ENDPOINT"}
    assert got["env"]["TRACE_TASK_CAPABILITY"] == inv.capability_token
    for text in got["leaks"].values():
        assert "worker-secret" not in text and "postgres:secret" not in text and "aws-secret" not in text


async def test_no_network_to_other_loopback_ports(lab: UdfLab) -> None:
    invoker = lab.invoker()
    # No quiet skip: without a sandbox the invoker refuses to run (tests/security).
    assert invoker.plan.netns, invoker.plan.unavailable
    accepted: list[object] = []
    server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = lab.python(
        "import socket\n"
        "def main(event):\n"
        "    out = {}\n"
        "    for host in ('127.0.0.1', '::1', '1.1.1.1'):\n"
        "        try:\n"
        "            socket.create_connection((host, event['config']['port']), timeout=2).close()\n"
        "            out[host] = 'connected'\n"
        "        except OSError as e:\n"
        "            out[host] = 'refused:' + str(e.errno)\n"
        "    return out\n"
    )
    got = result(await invoker.invoke(invocation(url, config={"port": port})))
    server.close()
    assert all(v.startswith("refused:") for v in got.values()), got
    assert accepted == []


async def test_task_endpoint_reachable_through_the_bridge(lab: UdfLab) -> None:
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        seen.append(data)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    endpoint = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    url = lab.python(
        "import os, socket\n"
        "def main(event):\n"
        "    target = os.environ['TRACE_TASK_ENDPOINT']\n"
        "    if target.startswith('unix:'):\n"
        "        s = socket.socket(socket.AF_UNIX); s.connect(target[5:])\n"
        "    else:\n"
        "        host, port = target.rsplit(':', 1); s = socket.create_connection((host, int(port)))\n"
        "    s.sendall(b'ping'); reply = s.recv(100); s.close()\n"
        "    return {'target': target, 'reply': reply.decode()}\n"
    )
    invoker = lab.invoker(task_endpoint=endpoint)
    got = result(await invoker.invoke(invocation(url)))
    server.close()
    assert got["reply"] == "echo:ping" and seen == [b"ping"]
    assert got["target"].startswith("unix:") == invoker.plan.netns


async def test_infinite_loop_is_killed_at_timeout_with_its_children(lab: UdfLab) -> None:
    marker = f"udf-marker-{uuid.uuid4().hex}"
    url = lab.python(
        "import subprocess, sys, os\n"
        "def main(event):\n"
        "    m = event['config']['marker']\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(1)', m])\n"
        "    subprocess.Popen([sys.executable, '-c', 'import os, time\\nos.setsid()\\nwhile True: time.sleep(1)', m])\n"
        "    while True:\n"
        "        pass\n"
    )
    started = asyncio.get_running_loop().time()
    res = await lab.invoker(timeout_seconds=2.0).invoke(invocation(url, config={"marker": marker}))
    elapsed = asyncio.get_running_loop().time() - started
    assert res.timed_out and res.error_reason == base.UDF_TIMEOUT and not res.ok
    assert elapsed < 8.0
    await asyncio.sleep(0.2)
    assert no_process_with(marker), "a UDF process survived its timeout"


async def test_timeout_is_capped_by_the_lease(lab: UdfLab) -> None:
    url = lab.python("import time\ndef main(event):\n    time.sleep(30)\n")
    soon = datetime.now(UTC) + timedelta(seconds=1.5)
    res = await lab.invoker(timeout_seconds=30.0).invoke(invocation(url, lease_expires_at=soon))
    assert res.timed_out and res.duration_seconds < 5.0
    with pytest.raises(TraceError) as info:
        await lab.invoker().invoke(invocation(url, lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert info.value.reason == "LEASE_EXPIRED"


async def test_rlimits_enforced(lab: UdfLab) -> None:
    url = lab.python(
        "import os\n"
        "def attempt(fn):\n"
        "    try:\n"
        "        fn(); return 'allowed'\n"
        "    except MemoryError:\n"
        "        return 'MemoryError'\n"
        "    except OSError as e:\n"
        "        return 'errno:' + str(e.errno)\n"
        "def big_file():\n"
        "    with open(os.path.join(os.environ['HOME'], 'big'), 'wb') as f:\n"
        "        f.write(b'x' * (3 * 1024 * 1024))\n"
        "def memory():\n"
        "    bytearray(512 * 1024 * 1024)\n"
        "def files():\n"
        "    [open('/dev/null') for _ in range(200)]\n"
        "def procs():\n"
        "    pids = []\n"
        "    try:\n"
        "        for _ in range(50):\n"
        "            pid = os.fork()\n"
        "            if pid == 0:\n"
        "                __import__('time').sleep(5)\n"
        "                os._exit(0)\n"
        "            pids.append(pid)\n"
        "    finally:\n"
        "        for p in pids: os.kill(p, 9); os.waitpid(p, 0)\n"
        "def small_file():\n"
        "    with open(os.path.join(os.environ['HOME'], 'small'), 'wb') as f:\n"
        "        f.write(b'x' * 1000)\n"
        "def main(event):\n"
        "    return {n: attempt(f) for n, f in [('small', small_file), ('fsize', big_file), ('as', memory),\n"
        "                                        ('nofile', files), ('nproc', procs)]}\n"
    )
    invoker = lab.invoker(
        file_size_bytes=1024 * 1024, memory_bytes=256 * 1024 * 1024, max_open_files=32, max_processes=8
    )
    got = result(await invoker.invoke(invocation(url)))
    assert got["small"] == "allowed"
    assert got["fsize"] == "errno:27"  # EFBIG
    assert got["as"] == "MemoryError"
    assert got["nofile"] == "errno:24"  # EMFILE
    if invoker.plan.switch_uid or invoker.plan.userns:
        assert got["nproc"] == "errno:11"  # EAGAIN: RLIMIT_NPROC counts this uid only


async def test_udf_runs_with_the_exact_limits_and_no_privileges(lab: UdfLab) -> None:
    """The chain sets the rlimits in one ``sh`` (not prlimit) and relies on bwrap for
    no_new_privs: the UDF must see exactly the configured values, and no capability."""
    url = lab.python(
        "import os, resource as r\n"
        "def main(event):\n"
        "    names = ['CPU', 'AS', 'FSIZE', 'NPROC', 'NOFILE', 'CORE']\n"
        "    lim = {n: list(r.getrlimit(getattr(r, 'RLIMIT_' + n))) for n in names}\n"
        "    status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "    keys = ('NoNewPrivs', 'CapEff', 'CapPrm', 'CapAmb', 'CapInh', 'Uid')\n"
        "    return {'limits': lim, 'status': {k: status[k].split() for k in keys}, 'pwd': 'PWD' in os.environ}\n"
    )
    mib = 1024 * 1024
    invoker = lab.invoker(
        cpu_seconds=7, memory_bytes=300 * mib, file_size_bytes=3 * mib, max_open_files=40, max_processes=9
    )
    got = result(await invoker.invoke(invocation(url)))
    assert got["limits"] == {
        "CPU": [7, 8],
        "AS": [300 * mib, 300 * mib],
        "FSIZE": [3 * mib, 3 * mib],
        "NPROC": [9, 9],
        "NOFILE": [40, 40],
        "CORE": [0, 0],
    }
    status = got["status"]
    assert status["NoNewPrivs"] == ["1"]
    for caps in ("CapEff", "CapPrm", "CapAmb", "CapInh"):
        assert int(status[caps][0], 16) == 0, (caps, status[caps])
    if invoker.plan.switch_uid:
        assert status["Uid"][0] != "0"
    assert got["pwd"] is False


async def test_cpu_limit_kills_busy_loop(lab: UdfLab) -> None:
    url = lab.python("def main(event):\n    while True:\n        pass\n")
    res = await lab.invoker(cpu_seconds=1, timeout_seconds=15.0).invoke(invocation(url))
    assert not res.ok and not res.timed_out and res.duration_seconds < 8.0


async def test_output_is_bounded(lab: UdfLab) -> None:
    url = lab.python(
        "import sys\n"
        "def main(event):\n"
        "    sys.stderr.write('e' * 500_000 + 'END-OF-STDERR')\n"
        "    return 'x' * 5_000_000\n"
    )
    res = await lab.invoker().invoke(invocation(url))
    assert res.error_reason == base.UDF_RESULT_TOO_LARGE and res.result_json == ""
    assert len(res.stderr_tail.encode()) <= 64 * 1024 and res.stderr_tail.endswith("END-OF-STDERR")


async def test_failures_are_reported(lab: UdfLab) -> None:
    raises = lab.python("def main(event):\n    raise RuntimeError('boom')\n")
    res = await lab.invoker().invoke(invocation(raises))
    assert res.error_reason == base.UDF_EXIT_NONZERO and "RuntimeError: boom" in res.stderr_tail
    garbage = lab.bundle("rust", "bootstrap", {"bootstrap": b"#!/bin/sh\necho not-json\n"}, executables=("bootstrap",))
    assert (await lab.invoker().invoke(invocation(garbage))).error_reason == base.UDF_RESULT_INVALID


async def test_bundle_fetch_is_fenced(lab: UdfLab) -> None:
    url = lab.python("def main(event):\n    return 1\n")
    outside = shared_tmp_dir("trace-outside-")
    try:
        shutil.copy(url[7:], outside / "b.zip")
        cases = {
            "BUNDLE_URL_FORBIDDEN": invocation(f"file://{outside}/b.zip"),
            "BUNDLE_URL_UNSUPPORTED": invocation("https://example.com/b.zip"),
            "BUNDLE_DIGEST_MISMATCH": invocation(url, bundle_sha256="0" * 64),
            "BUNDLE_NOT_FOUND": invocation(f"file://{lab.bundles}/missing.zip"),
        }
        for reason, inv in cases.items():
            with pytest.raises(TraceError) as info:
                await lab.invoker().invoke(inv)
            assert info.value.reason == reason
        other = UdfLab(Ed25519PrivateKey.generate(), lab.bundles, lab.runs)
        with pytest.raises(TraceError) as info:
            await lab.invoker().invoke(invocation(other.python("def main(e):\n    return 1\n")))
        assert info.value.reason == "BUNDLE_KEY_UNTRUSTED"
        assert os.listdir(lab.runs) == []
    finally:
        shutil.rmtree(outside)
