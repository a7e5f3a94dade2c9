"""S1 at run time on this machine (issue 12, item 8): the real Query Service process in a
network namespace of its own whose nftables ruleset is the chart's rendered Query Service
NetworkPolicy, translated by tests/deploy/nft.py, for values that name the far end of the
namespace's veth as the object store and PostgreSQL. A query over an S3 dataset (moto on
the host end, reached through a forwarder, as is PostgreSQL on 127.0.0.1) works; any other
connection from inside fails closed: another address on this machine, an allowed address
on another port or protocol, the same host over IPv6. Each forbidden destination is shown
reachable before the ruleset is loaded, so a drop is the ruleset's doing, not a missing
listener.

Every address is one this test configures (10.199.0.0/24 on a veth and the host end of a second veth),
and the namespace routes only that /24: nothing it sends can leave the machine.
Needs root, `ip netns` and nft; skips saying which is missing (fails instead under
`make s1-check`, which sets TRACE_S1_REQUIRED=1)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tests.api_support import TestIdentityProvider
from tests.datasets import blocks_table, write_dataset
from tests.deploy.allowlist import role_labels
from tests.deploy.chart import render, value_set
from tests.deploy.netpol import pods
from tests.deploy.nft import TABLE, Resolved, Translation, translate
from tests.e2e.conftest import all_output, spawn, trace_env, wait_for_line
from tests.integration.conftest import ORG
from tests.moto_server import moto_server
from trace_platform.adapters.objectstore.stores import S3ObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.core.config import ObjectStoreSettings, Settings

TAG = str(os.getpid())[-7:]
NS = f"trace-s1-{TAG}"
HOST_IF, NS_IF = f"ts1h{TAG}", f"ts1n{TAG}"
# A second veth to a second, idle namespace: its host end carries the forbidden address.
OTHER_NS, OTHER_IF, OTHER_PEER = f"trace-s1x-{TAG}", f"ts1x{TAG}", f"ts1y{TAG}"
SUBNET = "10.199.0.0/24"
HOST, INSIDE, FORBIDDEN = "10.199.0.1", "10.199.0.2", "10.199.0.5"  # FORBIDDEN: the other veth's host end
# IPv6 too (the table is `inet`): a random ULA /64 of this test's own, never the host's fd00::/64.
HOST6, INSIDE6 = "fdc7:5e1a:199::1", "fdc7:5e1a:199::2"
PG = ("127.0.0.1", 5432)
PROBE_TIMEOUT = 1.0
BLOCKED = {"timeout", "PermissionError:1"}

# Run inside the namespace: try each (protocol, host, port) at once, print one outcome
# each ("connected": a TCP connection, or a UDP datagram echoed back).
PROBE = """
import concurrent.futures, json, socket, sys
def one(target):
    proto, host, port = target
    try:
        if proto == "udp":
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(float(sys.argv[2]))
                s.sendto(b"ping", (host, port))
                s.recv(16)
        else:
            socket.create_connection((host, port), timeout=float(sys.argv[2])).close()
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return f"{type(exc).__name__}:{exc.errno}"
targets = json.loads(sys.argv[1])
with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
    print(json.dumps(list(pool.map(one, targets))))
"""


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, nftables)"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (Debian: iproute2, nftables)"
    if subprocess.run(["ip", "-4", "addr", "show", "to", SUBNET], capture_output=True, text=True).stdout.strip():
        return f"{SUBNET} is already in use on this machine"
    return None


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


class _Hold(socketserver.BaseRequestHandler):
    """A listener that accepts and reads until the peer closes."""

    def handle(self) -> None:
        while self.request.recv(65536):
            pass


class _Forward(socketserver.BaseRequestHandler):
    """Pipes a connection to ``server.target`` (moto and PostgreSQL listen on loopback)."""

    server: _Server

    def handle(self) -> None:
        with socket.create_connection(self.server.target) as up:

            def pump(src: socket.socket, dst: socket.socket) -> None:
                try:
                    while data := src.recv(65536):
                        dst.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (dst, src):
                        with suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)

            back = threading.Thread(target=pump, args=(up, self.request), daemon=True)
            back.start()
            pump(self.request, up)
            back.join(timeout=5)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    target: tuple[str, int] = ("", 0)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


def listen(stack: ExitStack, addr: tuple[str, int], target: tuple[str, int] | None = None, udp: bool = False) -> int:
    server: socketserver.BaseServer
    if udp:
        server = socketserver.ThreadingUDPServer(addr, _Echo)
    else:
        server = (_Server6 if ":" in addr[0] else _Server)(addr, _Forward if target else _Hold)
    if target:
        assert isinstance(server, _Server)
        server.target = target
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return int(server.server_address[1])  # type: ignore[index]


Target = tuple[str, str, int]  # protocol, address, port


def probe(targets: list[Target]) -> list[str]:
    out = sh("ip", "netns", "exec", NS, sys.executable, "-c", PROBE, json.dumps(targets), str(PROBE_TIMEOUT))
    return list(json.loads(out))


@dataclass
class S1:
    s3_port: int  # moto, through a forwarder on HOST
    pg_port: int  # PostgreSQL, through a forwarder on HOST
    dispatcher_port: int  # a listener standing in for the Dispatcher on HOST
    moto: str  # moto's loopback endpoint, for the host side to write datasets
    translation: Translation
    allowed: list[Target] = field(default_factory=list)
    forbidden: list[Target] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # outcomes before the ruleset was loaded


def network(stack: ExitStack) -> None:
    stack.callback(subprocess.run, ["ip", "netns", "del", OTHER_NS], capture_output=True)
    stack.callback(subprocess.run, ["ip", "link", "del", OTHER_IF], capture_output=True)
    stack.callback(subprocess.run, ["ip", "link", "del", HOST_IF], capture_output=True)
    stack.callback(subprocess.run, ["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST}/30", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "-n", NS, "addr", "add", f"{INSIDE}/30", "dev", NS_IF)
    sh("ip", "-n", NS, "link", "set", NS_IF, "up")
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    # Only this test's /24: no default route, so nothing can head for a real network.
    sh("ip", "-n", NS, "route", "add", SUBNET, "via", HOST)
    sh("ip", "addr", "add", f"{HOST6}/64", "dev", HOST_IF, "nodad")
    sh("ip", "-n", NS, "addr", "add", f"{INSIDE6}/64", "dev", NS_IF, "nodad")
    sh("ip", "netns", "add", OTHER_NS)
    sh("ip", "link", "add", OTHER_IF, "type", "veth", "peer", "name", OTHER_PEER)
    sh("ip", "link", "set", OTHER_PEER, "netns", OTHER_NS)
    sh("ip", "addr", "add", f"{FORBIDDEN}/30", "dev", OTHER_IF)
    sh("ip", "link", "set", OTHER_IF, "up")
    sh("ip", "-n", OTHER_NS, "link", "set", OTHER_PEER, "up")


def query_policy_values(s3_port: int, pg_port: int, dispatcher_port: int) -> dict[str, Any]:
    """kind's values with the object store and PostgreSQL at HOST (ipBlocks, not pods)."""
    return value_set(
        "kind",
        {
            "grpcPort": dispatcher_port,
            "network": {
                "objectStore": {"cidrs": [f"{HOST}/32"], "podSelector": None, "ports": [s3_port]},
                "postgres": {"cidrs": [f"{HOST}/32"], "podSelector": None, "ports": [pg_port]},
            },
        },
    )


@pytest.fixture(scope="module")
def s1() -> Iterator[S1]:
    reason = why_not()
    if reason and os.environ.get("TRACE_S1_REQUIRED"):  # `make s1-check`: no silent pass
        pytest.fail(f"S1 netns test: {reason}")
    if reason:
        pytest.skip(f"S1 netns test: {reason}")
    with ExitStack() as stack:
        network(stack)
        moto = stack.enter_context(moto_server())
        moto_port = int(moto.rsplit(":", 1)[1])
        s3_port = listen(stack, (HOST, 0), ("127.0.0.1", moto_port))
        pg_port = listen(stack, (HOST, 0), PG)
        dispatcher_port = listen(stack, (HOST, 0))
        other_port = listen(stack, (HOST, 0))
        for port in (s3_port, pg_port, other_port):
            listen(stack, (FORBIDDEN, port))
        listen(stack, (HOST6, s3_port))
        listen(stack, (HOST, s3_port), udp=True)  # the object store's port, another protocol
        objects = render(query_policy_values(s3_port, pg_port, dispatcher_port))
        pod = next(p for p in pods(objects) if p.component == "query")
        translation = translate(objects, pod, [Resolved(role_labels("dispatcher"), (HOST,))])
        env = S1(s3_port, pg_port, dispatcher_port, moto, translation)
        env.allowed = [("tcp", HOST, p) for p in (s3_port, pg_port, dispatcher_port)]
        env.forbidden = [
            ("tcp", HOST, other_port),  # an allowed address, another port
            ("udp", HOST, s3_port),  # an allowed address and port, another protocol
            *(("tcp", FORBIDDEN, p) for p in (s3_port, pg_port, other_port)),  # another address
            ("tcp", HOST6, s3_port),  # the same host over IPv6, which the policy does not name
        ]
        env.before = probe(env.allowed + env.forbidden)
        sh("ip", "netns", "exec", NS, "nft", "-f", "-", stdin=translation.ruleset)
        yield env


def test_the_ruleset_in_the_namespace_is_the_rendered_policy(s1: S1) -> None:
    t = s1.translation
    # Exactly the object store, PostgreSQL and the Dispatcher, on their ports; DNS's pods
    # resolve to nothing here (the service is reached by address), so DNS admits nothing.
    assert t.rules == [
        f"ip daddr {HOST}/32 tcp dport {s1.s3_port} accept",
        f"ip daddr {HOST}/32 tcp dport {s1.pg_port} accept",
        f"ip daddr {HOST}/32 tcp dport {s1.dispatcher_port} accept",
    ]
    assert t.flags == [] and len(t.unresolved) == 1 and "kube-dns" in t.unresolved[0]
    loaded = sh("ip", "netns", "exec", NS, "nft", "list", "table", "inet", TABLE)
    assert "policy drop;" in loaded and "ct state established,related accept" in loaded
    for port in (s1.s3_port, s1.pg_port, s1.dispatcher_port):
        assert f"ip daddr {HOST} tcp dport {port} accept" in loaded


def test_from_inside_only_the_allowed_destinations_connect(s1: S1) -> None:
    # Every destination answered before the ruleset: the listeners are there.
    assert s1.before == ["connected"] * (len(s1.allowed) + len(s1.forbidden)), s1.before
    after = probe(s1.allowed + s1.forbidden)
    assert after[: len(s1.allowed)] == ["connected"] * len(s1.allowed), after
    # Dropped, not refused by a peer: a TCP SYN goes unanswered (timeout); a UDP datagram
    # dropped by the output hook fails its sendto with EPERM at once.
    outcomes = list(zip(s1.forbidden, after[len(s1.allowed) :], strict=True))
    assert all(out in BLOCKED for _, out in outcomes), outcomes


def _query_env(settings: Settings, s1: S1, idp: TestIdentityProvider, **extra: str) -> dict[str, str]:
    """Off loopback: plaintext only as an explicit choice (the veth pair is this machine's),
    and user tokens from an identity provider's JWKS (HS256 is refused there)."""
    assert settings.database_url is not None
    return trace_env(
        settings,
        TRACE_DATABASE_URL=settings.database_url.replace(f"{PG[0]}:{PG[1]}", f"{HOST}:{s1.pg_port}"),
        TRACE_S3_ENDPOINT_URL=f"http://{HOST}:{s1.s3_port}",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        TRACE_DISPATCHER_ADDR=f"{HOST}:{s1.dispatcher_port}",
        TRACE_USER_AUTH_JWKS_PATH=str(idp.jwks_path),
        TRACE_USER_AUTH_ISSUER=idp.issuer,
        TRACE_TLS_ALLOW_PLAINTEXT="1",
        TRACE_QUERY_SLOTS="1",
        TRACE_QUERY_THREADS="1",
        **extra,
    )


def serve_query_in_namespace(env: dict[str, str]) -> subprocess.Popen[str]:
    # `ip netns exec` execs the command: the pid is the Query Service's own.
    argv = ["ip", "netns", "exec", NS, sys.executable, "-m", "trace_platform", "serve", "query"]
    return subprocess.Popen([*argv, "--listen", f"{INSIDE}:0"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def test_a_query_over_s3_works_from_the_query_service_in_the_namespace(settings: Settings, s1: S1) -> None:
    store = S3ObjectStore(ObjectStoreSettings(s3_endpoint_url=s1.moto, s3_access_key_id="testing",
                                              s3_secret_access_key="testing"))
    ds = write_dataset(store, "s3://trace-s1/datasets", [blocks_table(300), blocks_table(200, 300)])
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await DatasetRepository(pool).publish(ORG, "chain.blocks", ds.publication)
    finally:
        await pool.close()
    idp = TestIdentityProvider.create(settings.data_dir / "idp")
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await IdentityRepository(pool).ensure_member(ORG, "s1", "s1-user", "viewer")
    finally:
        await pool.close()
    proc = serve_query_in_namespace(_query_env(settings, s1, idp, TRACE_QUERY_EGRESS_ALLOW=f"{HOST}/32"))
    try:
        addr = wait_for_line(proc, r"query serving on (\S+)", timeout=60)
        assert addr.startswith(f"{INSIDE}:")
        assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat(f"/run/netns/{NS}").st_ino
        async with grpc.aio.insecure_channel(addr) as channel:
            out = await ApiQueryClient(channel, token=idp.token("s1-user", ORG)).query(
                "chain.blocks", "SELECT count(*), max(block_number) FROM dataset"
            )
        assert out.rows == [[500, 499]]
    finally:
        stop(proc)


async def test_the_query_service_refuses_a_storage_endpoint_outside_its_allowlist(settings: Settings) -> None:
    """No namespace needed: the application's own check, in a real `trace serve query`."""
    assert settings.user_auth.hs256_secret is not None
    env = trace_env(
        settings,
        TRACE_S3_ENDPOINT_URL=f"http://{FORBIDDEN}:9000",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        TRACE_DISPATCHER_ADDR="127.0.0.1:1",
        TRACE_QUERY_EGRESS_ALLOW=f"{HOST}/32,minio.trace.svc",
    )
    proc = spawn(["serve", "query", "--listen", "127.0.0.1:0"], env)
    try:
        assert proc.wait(timeout=60) == 2
    finally:
        stop(proc)
    err = "\n".join(all_output(proc))
    assert "QUERY_EGRESS_NOT_ALLOWED" in err and "TRACE_S3_ENDPOINT_URL" in err and "TRACE_QUERY_EGRESS_ALLOW" in err
    assert "Traceback" not in err and "serving on" not in err
