"""`trace datasets|alerts|dlq` against `trace lite up` with no address or token given:
each finds the running Lite and its tokens in the data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.anvil import free_port
from tests.e2e.conftest import spawn, wait_for_line
from trace_platform.core.config import Settings


def trace(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trace_platform", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(240)
def test_commands_find_lite_and_its_tokens_in_the_data_directory(
    settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DATA_DIR=str(tmp_path / "lite"),
        TRACE_DATABASE_URL=settings.database_url or "",
        TRACE_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        # A developer's receiver on this machine: Lite allows plain http, loopback when asked.
        TRACE_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
    )
    lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
    procs.append(lite)
    wait_for_line(lite, r"trace lite is up on (\S+)", timeout=120, stream="stdout")
    user_env = {k: v for k, v in env.items() if k != "TRACE_DATABASE_URL"}

    created = trace("alerts", "create", "local", "--webhook", "http://127.0.0.1:9/hook/s3cr3t", "--json", env=user_env)
    assert created.returncode == 0, created.stderr
    alert = json.loads(created.stdout)
    assert alert["webhooks"][0]["display"] == "http://127.0.0.1:9" and "s3cr3t" not in created.stdout
    listed = trace("alerts", "list", "--json", env=user_env)
    assert [a["alert_id"] for a in json.loads(listed.stdout)] == [alert["alert_id"]]
    walled = trace("alerts", "create", "meta", "--webhook", "http://169.254.169.254/latest", env=user_env)
    assert walled.returncode == 1 and "DESTINATION_FORBIDDEN" in walled.stderr

    datasets = trace("datasets", "list", "--json", env=user_env)
    assert datasets.returncode == 0 and isinstance(json.loads(datasets.stdout), list), datasets.stderr
    dlq = trace("dlq", "list", "--json", env=user_env)
    assert dlq.returncode == 0 and json.loads(dlq.stdout) == [], dlq.stderr

    down = trace("alerts", "list", "--addr", f"127.0.0.1:{free_port()}", env=user_env)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr and "trace lite up" in down.stderr
