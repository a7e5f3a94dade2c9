"""Wrong use of `trace` gets a clear answer and an exit code, never a traceback (issue 14, item 6).

Argument parsing runs through click's CliRunner; start-up paths run `trace` as a real
subprocess (they must stop before anything is started or written).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from trace_platform.cli.common import parse_addr
from trace_platform.cli.main import cli
from trace_platform.core import settings_env
from trace_platform.core.config import SettingsError, settings_from_env


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def trace(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trace_platform", *args], env=env, capture_output=True, text=True, timeout=60
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(extra)
    return env


# --addr -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "problem"),
    [
        ("localhost", "'localhost' has no port: use host:port, e.g. 127.0.0.1:50051"),
        ("10.0.0.1", "'10.0.0.1' has no port: use host:port, e.g. 127.0.0.1:50051"),
        (":50051", "':50051' has no port: use host:port, e.g. 127.0.0.1:50051"),
        ("localhost:", "'localhost:': the port must be a number in 1..65535"),
        ("localhost:0", "'localhost:0': the port must be a number in 1..65535"),
        ("localhost:65536", "'localhost:65536': the port must be a number in 1..65535"),
        ("localhost:http", "'localhost:http': the port must be a number in 1..65535"),
        ("localhost:-1", "'localhost:-1': the port must be a number in 1..65535"),
        ("::1:50051", "'::1:50051': an IPv6 address goes in brackets, e.g. [::1]:50051"),
        ("[::1", "'[::1' has no port: use host:port, e.g. 127.0.0.1:50051"),
        ("[nope]:50051", "'[nope]:50051': not an IPv6 address in brackets"),
    ],
)
@pytest.mark.parametrize("command", [["status"], ["pause", "job"], ["query", "--dataset", "a.b", "SELECT 1"]])
def test_an_address_without_a_usable_port_is_refused(addr: str, problem: str, command: list[str]) -> None:
    code, out = invoke(*command, "--addr", addr)
    assert code == 2
    assert f"Error: Invalid value for '--addr': {problem}" in out


def test_trace_addr_from_the_environment_is_checked_too() -> None:
    code, out = invoke("status", env={"TRACE_ADDR": "example.com"})
    assert code == 2 and "Invalid value for '--addr': 'example.com' has no port" in out


@pytest.mark.parametrize("addr", ["127.0.0.1:50051", "localhost:1", "[::1]:65535", "trace.example.com:443"])
def test_host_port_forms_pass(addr: str) -> None:
    assert parse_addr(addr) == addr


def test_a_listen_address_may_ask_for_any_free_port() -> None:
    assert parse_addr("127.0.0.1:0", listen=True) == "127.0.0.1:0"
    code, out = invoke("lite", "up", "--listen", "127.0.0.1")
    assert code == 2 and "Invalid value for '--listen': '127.0.0.1' has no port" in out


# --limit, --format --------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", "-10000"])
def test_a_limit_below_one_is_refused(limit: str) -> None:
    code, out = invoke("query", "--dataset", "a.b", "--limit", limit, "SELECT 1")
    assert code == 2
    assert f"Error: Invalid value for '--limit': {limit} is not in the range x>=1." in out


def test_parquet_needs_an_output_file() -> None:
    code, out = invoke("query", "--dataset", "a.b", "--format", "parquet", "SELECT 1", env={"TRACE_USER_TOKEN": "t"})
    assert (code, out) == (2, "error: --format parquet needs --output FILE\n")


def test_an_output_file_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "out.csv"
    code, out = invoke("query", "--dataset", "a.b", "--format", "csv", "-o", str(target), "SELECT 1")
    assert (code, out) == (2, f"error: --output {target}: no directory {target.parent}\n")


def test_an_output_file_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    # A name the file system refuses (too long): the file is made before the first RPC.
    target = tmp_path / ("x" * 300 + ".csv")
    env = {"TRACE_USER_TOKEN": "t", "TRACE_ADDR": "127.0.0.1:9"}
    code, out = invoke("query", "--dataset", "a.b", "--format", "csv", "-o", str(target), "SELECT 1", env=env)
    assert (code, out) == (1, f"error: --output {target}: File name too long\n")


def test_an_unknown_format_is_refused() -> None:
    code, out = invoke("query", "--dataset", "a.b", "--format", "xml", "SELECT 1")
    assert code == 2 and "Invalid value for '--format': 'xml' is not one of" in out


# credentials --------------------------------------------------------------------------


def test_no_credentials_says_where_it_looked_and_what_to_do(tmp_path: Path) -> None:
    code, out = invoke("status", "--data-dir", str(tmp_path), env={"TRACE_ADMIN_TOKEN": ""})
    assert (code, out) == (
        1,
        f"error: no credentials in {tmp_path}\nhint: start `trace lite up` or set TRACE_ADMIN_TOKEN (or --data-dir)\n",
    )


# bad environment values ---------------------------------------------------------------


def _trace_variables() -> list[str]:
    # Every derived name and old alias (core/settings_env.py derives them from the fields).
    names = sorted(n for n in settings_env.all_names() if n.startswith("TRACE_"))
    assert len(names) > 100, names
    return names


@pytest.mark.parametrize("variable", _trace_variables())
@pytest.mark.parametrize("value", ["not-a-value", "1e400", "nan", " 12 x"])
def test_every_variable_either_loads_or_names_itself(variable: str, value: str) -> None:
    """The class of the bug: whatever a TRACE_* variable holds, start-up either takes it or
    raises one typed error naming that variable (never a bare ValueError or worse)."""
    try:
        settings_from_env({variable: value})
    except SettingsError as exc:
        assert exc.variable == variable
        assert str(exc) == f"{variable}: {exc.problem}" and exc.problem


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TRACE_LEASE_SECONDS", "abc", "not a number: 'abc'"),
        ("TRACE_LEASE_SECONDS", "inf", "not a finite number: 'inf'"),
        ("TRACE_QUERY_SLOTS", "2.5", "not an integer: '2.5'"),
        ("TRACE_TOKEN_TTL_SECONDS", "five", "not an integer: 'five'"),
        ("TRACE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,nope", "not a network: 'nope'"),
    ],
)
@pytest.mark.parametrize(
    "command", [["lite", "up"], ["dispatcher", "serve"], ["worker", "run"]], ids=lambda c: "-".join(c)
)
def test_a_bad_environment_value_stops_start_up_by_name(
    variable: str, value: str, problem: str, command: list[str], tmp_path: Path
) -> None:
    data_dir = tmp_path / "lite"
    done = trace(*command, env=clean_env(**{variable: value, "TRACE_DATA_DIR": str(data_dir)}))
    assert (done.returncode, done.stderr, done.stdout) == (2, f"error: {variable}: {problem}\n", "")
    assert not data_dir.exists()  # stopped before anything was made


def test_a_bad_log_level_is_refused_by_name() -> None:
    code, out = invoke("status", env={"TRACE_LOG_LEVEL": "loud"})
    assert code == 2 and "Invalid value for '--log-level': 'loud' is not one of" in out
    assert invoke("--log-level", "info", "sql", "check", "SELECT 1") == (0, "ok\n")


# one `trace lite up` per data directory -----------------------------------------------


@pytest.fixture
def held_data_dir(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A data directory whose lock another process holds (as a running `trace lite up` does)."""
    data_dir = tmp_path / "lite"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom pathlib import Path\nfrom trace_platform.cli.data_lock import hold_data_dir\n"
            "with hold_data_dir(Path(sys.argv[1])):\n    print('held', flush=True)\n    sys.stdin.read()\n",
            str(data_dir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    try:
        yield data_dir, holder
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_a_second_lite_up_on_a_data_dir_in_use_refuses(held_data_dir: tuple[Path, subprocess.Popen[str]]) -> None:
    data_dir, holder = held_data_dir
    pid = holder.pid
    before = sorted(p.name for p in data_dir.iterdir())
    done = trace("lite", "up", "--listen", "127.0.0.1:0", env=clean_env(TRACE_DATA_DIR=str(data_dir)))
    assert done.returncode == 1
    assert done.stderr == (
        f"error: data directory {data_dir} is in use by another `trace lite up` (pid {pid})\n"
        "hint: stop it, or use another --data-dir / TRACE_DATA_DIR\n"
    )
    assert sorted(p.name for p in data_dir.iterdir()) == before == ["lite.lock"]


def test_the_lock_goes_with_its_holder(held_data_dir: tuple[Path, subprocess.Popen[str]]) -> None:
    from trace_platform.cli.common import CliError
    from trace_platform.cli.data_lock import hold_data_dir

    data_dir, holder = held_data_dir
    in_use = rf"in use by another `trace lite up` \(pid {holder.pid}\)"
    with pytest.raises(CliError, match=in_use), hold_data_dir(data_dir):
        pass
    holder.kill()
    holder.wait(timeout=10)
    with hold_data_dir(data_dir):  # a dead holder leaves no stale lock
        assert (data_dir / "lite.lock").read_text() == f"{os.getpid()}\n"


# --version ----------------------------------------------------------------------------


def test_version_is_the_package_version() -> None:
    done = trace("--version", env=clean_env())
    assert (done.returncode, done.stdout) == (0, f"trace {importlib.metadata.version('trace-platform')}\n")
