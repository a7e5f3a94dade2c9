"""Issue 13, hole 1: a UDF saw the host's file system. From inside real sandboxed runs
(the real LocalInvoker, real bubblewrap namespaces, the per-invocation uid) every host
unix socket, the data directory, the object store, other bundles, the home directory,
/root and /work are unreachable, the root holds only what the runtime needs, nothing a
run writes to /tmp or /dev/shm survives it, and the task bridge still works. Where the
sandbox cannot be made the invoker refuses to run (fail closed) unless the development
setting allows it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.security.test_malformed_input import reason_of
from tests.udf_fixtures import UdfLab, invocation, shared_tmp_dir
from trace_platform.adapters.invoker.base import InvocationResult
from trace_platform.adapters.invoker.local import LocalInvoker
from trace_platform.adapters.invoker.sandbox import UidPool
from trace_platform.core.config import Settings, settings_from_env
from trace_platform.core.errors import ErrorKind, TraceError
from trace_platform.core.metadata import WORKER_TOKEN
from trace_platform.gen.trace.v1 import invoker_pb2, invoker_pb2_grpc
from trace_platform.servers.common.server import start_server
from trace_platform.servers.invoker.app import build_invoker_app

# What a sandboxed root may hold at its top level: the system directories and the
# sandbox's own mounts (the run directory lies under the private /tmp).
ROOT_ENTRIES = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp"}
ETC_ENTRIES = {"ld.so.cache", "alternatives", "localtime", "passwd", "group"}
PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"

# Reports, for every path it is given, what the UDF could do with it.
PROBE_UDF = r"""
import os, socket, stat

def look(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 'missing'
    except PermissionError:
        return 'denied'
    try:
        if stat.S_ISDIR(st.st_mode):
            return 'listed:' + ','.join(sorted(os.listdir(path)))
        with open(path, 'rb') as f:
            return 'read:%d' % len(f.read(1 << 20))
    except FileNotFoundError:
        return 'missing'
    except PermissionError:
        return 'denied'
    except OSError as e:
        return 'error:%d' % e.errno

def connect(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(address)
        return 'connected'
    except OSError as e:
        return 'refused:%s' % (e.errno,)
    finally:
        s.close()

def sockets_under(top):
    found = []
    for d, dirs, files in os.walk(top, onerror=lambda e: None):
        for name in files + dirs:
            p = os.path.join(d, name)
            try:
                if stat.S_ISSOCK(os.lstat(p).st_mode):
                    found.append(p)
            except OSError:
                pass
    return found

def write(path):
    try:
        with open(path, 'w') as f:
            f.write('left behind')
        return 'written'
    except OSError as e:
        return 'error:%d' % e.errno

def main(event):
    cfg = event['config']
    seen = set(cfg['sockets'])
    for top in ('/var/run', '/run', '/tmp', '/var/tmp', '/dev/shm'):
        seen.update(sockets_under(top))
    bridge = os.environ.get('TRACE_TASK_ENDPOINT', '')[len('unix:'):]
    seen.discard(bridge)
    out = {
        'paths': {p: look(p) for p in cfg['paths']},
        'sockets': {p: connect(p) for p in sorted(seen)},
        'abstract': connect('\0' + cfg['abstract']),
        'writes': {p: write(p) for p in cfg['writes']},
        'tmp_now': sorted(os.listdir('/tmp')) + sorted(os.listdir('/dev/shm')),
        'home': os.environ['HOME'],
    }
    if bridge:
        s = socket.socket(socket.AF_UNIX)
        s.connect(bridge)
        s.sendall(b'ping')
        out['bridge'] = s.recv(100).decode()
        s.close()
    return out
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[UdfLab]:
    bundles, runs = shared_tmp_dir("trace-bundles-"), shared_tmp_dir("trace-runs-")
    yield UdfLab(Ed25519PrivateKey.generate(), bundles, runs)
    shutil.rmtree(bundles, ignore_errors=True)
    shutil.rmtree(runs, ignore_errors=True)


@pytest.fixture
def data_dirs() -> Iterator[list[Path]]:
    """Two Lite data directories holding another org's dataset, readable by any uid on
    the host (as the attack found them): one under the host's /tmp, one elsewhere."""
    made: list[Path] = []
    for parent in (Path("/tmp"), Path("/var/tmp")):
        data = parent / f"trace-data-{uuid.uuid4().hex[:8]}"
        version = data / "objects" / "datasets" / "org-other" / "transfers" / "v1"
        version.mkdir(parents=True)
        pq.write_table(pa.table({"value": [1, 2, 3]}), version / "part-0.parquet")
        (version / "manifest.json").write_text(json.dumps({"org": "other"}))
        for path in [data, *data.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        made.append(data)
    yield made
    for data in made:
        shutil.rmtree(data, ignore_errors=True)


class HostSockets:
    """Listeners on the host that a UDF must not reach: pathname sockets open to every
    uid under /tmp and /run, and an abstract one. Counts what connects."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.dir = shared_tmp_dir("trace-hostsock-")
        self.dir.chmod(0o755)
        self.paths = [str(self.dir / "open.sock"), f"/run/trace-hostsock-{tag}.sock"]
        self.abstract = f"trace-hostsock-{tag}"
        self.accepted = 0
        self.servers: list[asyncio.base_events.Server] = []

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()

    async def start(self) -> None:
        for path in self.paths:
            self.servers.append(await asyncio.start_unix_server(self._accept, path=path))
            os.chmod(path, 0o777)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.bind("\0" + self.abstract)
        self.servers.append(await asyncio.start_unix_server(self._accept, sock=raw))

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        shutil.rmtree(self.dir, ignore_errors=True)


def host_sockets() -> list[str]:
    """Every socket file the host has under /run and /tmp (PostgreSQL's among them)."""
    found: list[str] = []
    for top in ("/run", "/tmp"):
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        found.append(path)
    return found


def host_path(path: str) -> str:
    return os.path.realpath(path)


def existing(paths: list[str]) -> list[str]:
    """Which of ``paths`` exist on the host."""
    return [p for p in paths if os.path.lexists(p)]


def host_file_in(directory: Path, name: str, text: str) -> None:
    """A file under ``directory`` that any uid may reach and read."""
    path = directory / name
    path.parent.mkdir(parents=True)
    for parent in (directory, *directory.glob("**/")):
        parent.chmod(0o755)
    host_file(str(path), text)


def host_file(path: str, text: str) -> None:
    """A file on the host that any uid may read."""
    Path(path).write_text(text)
    os.chmod(path, 0o644)


def bound_names(invoker: LocalInvoker, directory: str) -> set[str]:
    """Names a runtime installation bound read-only puts under ``directory`` (none with
    the default runtimes, which live in /usr)."""
    names: set[str] = set()
    args: tuple[str, ...] = getattr(invoker.plan, "root", ())
    for i, arg in enumerate(args[:-2]):
        if arg == "--ro-bind":
            target = Path(args[i + 2])
            if target.is_relative_to(directory) and target != Path(directory):
                names.add(target.relative_to(directory).parts[0])
    return names


def names(outcome: str) -> set[str]:
    assert outcome.startswith("listed:"), outcome
    return set(filter(None, outcome[len("listed:") :].split(",")))


def result(res: InvocationResult) -> dict:  # type: ignore[type-arg]
    assert res.ok, (res.error_reason, res.exit_code, res.stderr_tail)
    value = json.loads(res.result_json)
    assert isinstance(value, dict)
    return value


async def echo_endpoint() -> tuple[asyncio.base_events.Server, str]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_a_sandboxed_run_reaches_no_host_socket_data_or_home(lab: UdfLab, data_dirs: list[Path]) -> None:
    listeners = HostSockets()
    await listeners.start()
    server, endpoint = await echo_endpoint()
    invoker = lab.invoker(task_endpoint=endpoint)
    assert invoker.plan.netns, invoker.plan.describe()  # no quiet skip: this machine can make it
    url = lab.python(PROBE_UDF)
    own_bundle = url[len("file://") :]
    other_run = lab.runs / f"udf-other-{uuid.uuid4().hex[:8]}"  # another run's directory, left open
    host_file_in(other_run, "home/secret", "another run's file")
    secret = [d / "objects" / "datasets" / "org-other" / "transfers" / "v1" / "part-0.parquet" for d in data_dirs]
    hidden = [
        *(str(d) for d in data_dirs),
        *(str(d / "objects") for d in data_dirs),
        *(str(p) for p in secret),
        own_bundle,
        str(lab.bundles),
        str(other_run / "home" / "secret"),
        "/var/run/postgresql",
        "/var/lib/postgresql",
        "/etc/postgresql",
        "/run",
        "/var",
    ]
    homes = [str(Path.home()), "/root", "/work", "/home"]
    sockets = sorted({*host_sockets(), *listeners.paths, PG_SOCKET, "/tmp/.s.PGSQL.5432"})
    assert host_path(PG_SOCKET) in {host_path(s) for s in sockets}, "PostgreSQL's socket is not on this host"
    runs = str(lab.runs)
    config = {
        "paths": [*hidden, *homes, "/", "/etc", runs],
        "sockets": sockets,
        "abstract": listeners.abstract,
        "writes": [],
    }
    try:
        got = result(await invoker.invoke(invocation(url, config=config)))
    finally:
        server.close()
        listeners.close()
        shutil.rmtree(other_run)
    paths = got["paths"]
    for path in hidden:
        assert paths[path] == "missing", (path, paths[path])
    for path in homes:  # absent, or only the directories above a bound runtime
        assert paths[path] == "missing" or names(paths[path]) <= bound_names(invoker, path), (path, paths[path])
    assert names(paths["/"]) <= ROOT_ENTRIES | bound_names(invoker, "/"), paths["/"]
    assert names(paths["/etc"]) <= ETC_ENTRIES, paths["/etc"]
    own_run = Path(got["home"]).parent
    assert own_run.parent == lab.runs and names(paths[runs]) == {own_run.name}  # no other run
    assert got["sockets"], "the UDF found no socket to try"
    assert all(not v.startswith("connected") for v in got["sockets"].values()), got["sockets"]
    assert set(sockets) <= set(got["sockets"])
    assert got["abstract"] != "connected"
    assert listeners.accepted == 0
    assert got["bridge"] == "echo:ping", "the task bridge is the one way out and must still work"


async def test_nothing_a_run_writes_to_tmp_or_shm_survives_it(lab: UdfLab) -> None:
    marker = f"trace-leak-{uuid.uuid4().hex}"
    writes = [f"/tmp/{marker}", f"/dev/shm/{marker}", f"/var/tmp/{marker}"]
    config = {"paths": [], "sockets": [], "abstract": marker, "writes": writes}
    url = lab.python(PROBE_UDF)
    first = result(await lab.invoker().invoke(invocation(url, config=config)))
    # The private tmp and shm are usable inside; /var/tmp does not exist there.
    assert first["writes"][f"/tmp/{marker}"] == "written"
    assert first["writes"][f"/dev/shm/{marker}"] == "written"
    assert first["writes"][f"/var/tmp/{marker}"].startswith("error:")
    assert marker in first["tmp_now"]
    assert existing(writes) == [], "files outlived the run"
    second = result(await lab.invoker().invoke(invocation(url, config={**config, "writes": []})))
    assert marker not in second["tmp_now"], "a second run saw the first run's files"
    assert os.listdir(lab.runs) == []


async def test_node_sees_the_same_minimal_root(lab: UdfLab) -> None:
    url = lab.bundle(
        "node",
        "index.handler",
        {
            "index.js": b"""
const fs = require("fs"), net = require("net");
exports.handler = async (event) => {
  const pg = await new Promise((resolve) => {
    const s = net.connect(event.config.socket);
    s.on("connect", () => { s.destroy(); resolve("connected"); });
    s.on("error", (e) => resolve("refused:" + e.code));
  });
  return { root: fs.readdirSync("/").sort(), root_home: fs.existsSync("/root"), pg };
};
"""
        },
    )
    invoker = lab.invoker()
    got = result(await invoker.invoke(invocation(url, config={"socket": PG_SOCKET})))
    assert set(got["root"]) <= ROOT_ENTRIES | bound_names(invoker, "/"), got["root"]
    assert got["pg"].startswith("refused:") and got["root_home"] == ("root" in bound_names(invoker, "/"))


def fake_bwrap(directory: Path) -> Path:
    """A bubblewrap that cannot make namespaces (as in a container that forbids them)."""
    path = directory / "bwrap"
    path.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    path.chmod(0o755)
    return path


async def test_without_a_sandbox_the_invoker_refuses_to_run(lab: UdfLab) -> None:
    marker = f"/tmp/trace-unsandboxed-{uuid.uuid4().hex}"
    url = lab.python(f"def main(event):\n    open({marker!r}, 'w').write('ran')\n    return 1\n")
    tools = shared_tmp_dir("trace-fakebwrap-")
    try:
        for bwrap in ("/nonexistent/bwrap", str(fake_bwrap(tools))):
            invoker = lab.invoker(bwrap=bwrap)
            assert not invoker.plan.netns and "UNSANDBOXED" in invoker.plan.describe()
            with pytest.raises(TraceError) as info:
                await invoker.invoke(invocation(url))
            assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.reason == "SANDBOX_UNAVAILABLE"
            assert existing([marker]) == [], "the bundle ran without a sandbox"
            assert os.listdir(lab.runs) == []
    finally:
        shutil.rmtree(tools)


async def test_the_development_setting_runs_unsandboxed_and_says_so(lab: UdfLab) -> None:
    visible = f"/tmp/trace-host-visible-{uuid.uuid4().hex}"
    host_file(visible, "host")
    try:
        url = lab.python(f"import os\ndef main(event):\n    return {{'sees_host_tmp': os.path.exists({visible!r})}}\n")
        invoker = lab.invoker(bwrap="/nonexistent/bwrap", allow_unsandboxed=True)
        assert "UNSANDBOXED" in invoker.plan.describe()
        assert result(await invoker.invoke(invocation(url))) == {"sees_host_tmp": True}
        sandboxed = lab.invoker()
        assert "mountns" in sandboxed.plan.describe()
        assert result(await sandboxed.invoke(invocation(url))) == {"sees_host_tmp": False}
    finally:
        os.unlink(visible)


async def test_the_refusal_reaches_the_caller_as_unavailable_with_its_reason(lab: UdfLab) -> None:
    """Through the real RuntimeInvoker gRPC service: UNAVAILABLE, reason SANDBOX_UNAVAILABLE."""
    invoker = lab.invoker(bwrap="/nonexistent/bwrap")
    app = build_invoker_app(Settings(worker_token="worker-secret"), invoker)
    server = await start_server([app.binding], "127.0.0.1:0")
    request = invoker_pb2.InvokeRequest(
        task_id=str(uuid.uuid4()),
        attempt=1,
        lease_token=str(uuid.uuid4()),
        capability_token="cap",
        bundle_url=lab.python("def main(event):\n    return 1\n"),
    )
    request.lease_expires_at.FromDatetime(datetime.now(UTC) + timedelta(seconds=60))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = invoker_pb2_grpc.RuntimeInvokerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(request, metadata=((WORKER_TOKEN, "worker-secret"),))
    finally:
        await server.stop(0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(info.value) == "SANDBOX_UNAVAILABLE"
    assert os.listdir(lab.runs) == []


def test_the_development_setting_is_off_unless_set() -> None:
    assert settings_from_env({}).invoker.allow_unsandboxed is False
    assert settings_from_env({"TRACE_INVOKER_ALLOW_UNSANDBOXED": "1"}).invoker.allow_unsandboxed is True
    assert settings_from_env({"TRACE_INVOKER_BWRAP": "/opt/bwrap"}).invoker.bwrap == "/opt/bwrap"


def test_two_invokers_never_share_a_sandbox_uid(tmp_path: Path) -> None:
    """Each invoker process has its own pool; a uid is claimed machine-wide (an flock),
    so one invoker's cleanup (kill -1 as that uid) cannot kill the other's UDF."""
    first, second = UidPool(300_000, 3, tmp_path), UidPool(300_000, 3, tmp_path)
    held = [first.acquire(), second.acquire(), first.acquire()]
    assert sorted(held) == [300_000, 300_001, 300_002]
    with pytest.raises(TraceError) as info:
        second.acquire()
    assert info.value.reason == "SANDBOX_UIDS_EXHAUSTED"
    first.release(held[0])
    assert second.acquire() == held[0]


async def test_the_private_tmp_is_bounded(lab: UdfLab) -> None:
    """/tmp and /dev/shm are RAM: each is capped (tmpfs_bytes), whatever the file count."""
    url = lab.python(
        "import errno, os\n"
        "def main(event):\n"
        "    out = {}\n"
        "    for top in ('/tmp', '/dev/shm'):\n"
        "        written = 0\n"
        "        try:\n"
        "            for i in range(64):\n"
        "                with open(f'{top}/fill-{i}', 'wb') as f:\n"
        "                    f.write(b'x' * (1 << 20))\n"
        "                written += 1\n"
        "        except OSError as e:\n"
        "            out[top] = [written, errno.errorcode[e.errno]]\n"
        "    return out\n"
    )
    got = result(await lab.invoker(tmpfs_bytes=8 * 1024 * 1024).invoke(invocation(url)))
    for top in ("/tmp", "/dev/shm"):
        written, error = got[top]
        assert error == "ENOSPC" and written <= 8, got


def make_venv(directory: Path) -> Path:
    """A virtualenv of the system Python, traversable by the sandbox uid."""
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(directory / "venv")], check=True)
    for path in [directory, *directory.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    return directory / "venv" / "bin" / "python"


async def test_a_runtime_under_the_hosts_tmp_runs_and_only_it_is_bound(lab: UdfLab) -> None:
    """Runtime binds come after the private /tmp (which would hide them); the rest of
    the host's /tmp stays out."""
    where = shared_tmp_dir("trace-runtime-")
    try:
        python = make_venv(where)
        host_file_in(where, "beside/secret", "next to the runtime")
        url = lab.python(
            "import os, sys\n"
            "def main(event):\n"
            "    return {'prefix': sys.prefix, 'beside': os.path.exists(event['config']['beside'])}\n"
        )
        invoker = lab.invoker(python=str(python))
        config = {"beside": str(where / "beside" / "secret")}
        got = result(await invoker.invoke(invocation(url, config=config)))
    finally:
        shutil.rmtree(where)
    assert got == {"prefix": str(where / "venv"), "beside": False}
