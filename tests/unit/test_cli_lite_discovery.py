"""Every command finds the running `trace lite up` through its data directory: the address
and tokens it left in lite.json, unless a flag or variable says otherwise."""

from __future__ import annotations

import socket
from pathlib import Path

from click.testing import CliRunner

from trace_platform.cli.main import cli
from trace_platform.lite import credentials


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(*args: str, env: dict[str, str | None]) -> str:
    result = CliRunner().invoke(cli, ["status", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 1
    return result.output


def test_the_address_comes_from_the_data_directory(tmp_path: Path) -> None:
    lite = f"127.0.0.1:{_closed_port()}"
    credentials.save(tmp_path, credentials.LiteCredentials(lite, "admin-secret", "worker-secret"))
    out = _status("--data-dir", str(tmp_path), env={"TRACE_ADDR": None, "TRACE_ADMIN_TOKEN": None})
    # Nothing listens there: the hint names the address it tried, which is Lite's.
    assert f"address {lite}" in out and "UNAVAILABLE" in out
    assert "admin-secret" not in out


def test_a_flag_or_variable_wins_over_the_data_directory(tmp_path: Path) -> None:
    credentials.save(tmp_path, credentials.LiteCredentials(f"127.0.0.1:{_closed_port()}", "a", "w"))
    given = f"127.0.0.1:{_closed_port()}"
    for args, env in (
        (("--addr", given, "--data-dir", str(tmp_path)), {"TRACE_ADDR": None}),
        (("--data-dir", str(tmp_path)), {"TRACE_ADDR": given}),
        # --addr after --data-dir: the data directory is read first whatever the order.
        (("--data-dir", str(tmp_path), "--addr", given), {"TRACE_ADDR": None}),
    ):
        assert f"address {given}" in _status(*args, env={**env, "TRACE_ADMIN_TOKEN": None})


def test_without_credentials_the_default_address_is_used(tmp_path: Path) -> None:
    out = _status("--data-dir", str(tmp_path), env={"TRACE_ADDR": None, "TRACE_ADMIN_TOKEN": "t"})
    assert "address 127.0.0.1:50051" in out


def test_lite_env_exports_what_other_tools_need(tmp_path: Path) -> None:
    import subprocess

    credentials.save(tmp_path, credentials.LiteCredentials("127.0.0.1:50999", "a", "w", "s", "tok'en$"))
    result = CliRunner().invoke(
        cli, ["lite", "env", "--data-dir", str(tmp_path)], env={"TRACE_USER_TOKEN": None}, catch_exceptions=False
    )
    assert result.exit_code == 0
    # Quoted for the shell: what eval sets is exactly what the file holds.
    shown = subprocess.run(
        ["bash", "-c", f'{result.output}\nprintf "%s|%s" "$TRACE_ADDR" "$TRACE_USER_TOKEN"'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == "127.0.0.1:50999|tok'en$"
