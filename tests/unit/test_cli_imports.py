"""The CLI imports only what a command uses (issue 14, item 5), checked without timing.

Each case runs `trace ...` in a fresh interpreter and reads ``sys.modules`` afterwards:
listing commands and their help must not load the platform; `trace sql check` loads the
gate and sqlglot and nothing that talks to a server; `trace status` / `trace query` load
grpc and their client, not the servers, DuckDB, PostgreSQL drivers or Arrow.
bench/cli_startup.py measures what this buys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.anvil import free_port

# Imports `trace`, runs each argv given as JSON, prints the loaded modules as JSON.
_PROBE = """
import json, sys
import click
from trace_platform.cli.main import cli

for argv in json.loads(sys.argv[1]):
    try:
        cli.main(argv, prog_name="trace", standalone_mode=False)
    except (SystemExit, click.ClickException, click.exceptions.Exit):
        pass
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
"""

# What no command needs before it runs.
PLATFORM = (
    "trace_platform.app",
    "trace_platform.adapters",
    "trace_platform.servers",
    "trace_platform.workers",
    "trace_platform.lite.stack",
    "trace_platform.lite.embedded_pg",
    "grpc",
    "duckdb",
    "asyncpg",
    "pyarrow",
    "uvloop",
    "aiohttp",
    "boto3",
    "botocore",
)
SERVER_SIDE = tuple(p for p in PLATFORM if p not in ("grpc",))
# `servers.common.logs` is the one servers module the CLI uses (its log format), once a command runs.
ALLOWED = ("trace_platform.servers", "trace_platform.servers.common", "trace_platform.servers.common.logs")


def loaded(*argvs: list[str], env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(argvs))],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    marker = done.stderr.rsplit("MODULES ", 1)
    assert len(marker) == 2, done.stderr
    return set(json.loads(marker[1]))


def offending(modules: set[str], prefixes: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(m for m in modules if m not in allowed and any(m == p or m.startswith(p + ".") for p in prefixes))


def command_paths() -> list[list[str]]:
    """Every command and group of the tree, as argv prefixes."""
    import click

    from trace_platform.cli.main import cli

    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None
            paths.append([*prefix, name])
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(cli, [])
    return paths


def test_the_tree_is_walked() -> None:
    names = {" ".join(p) for p in command_paths()}
    assert {"status", "sql check", "query", "lite up", "bundle build", "worker run"} <= names


def test_help_and_version_load_nothing_of_the_platform() -> None:
    argvs = [["--help"], ["--version"], *([*p, "--help"] for p in command_paths())]
    modules = loaded(*argvs)
    bad = offending(
        modules,
        (*PLATFORM, "sqlglot", "google.protobuf", "cryptography", "trace_platform.clients", "trace_platform.gen"),
        ALLOWED,
    )
    assert not bad, f"listing commands imported {bad}"
    # The settings module (a dozen dataclasses) is read only by commands that start services.
    assert "trace_platform.core.config" not in modules


def test_sql_check_loads_the_gate_and_sqlglot_only() -> None:
    modules = loaded(["sql", "check", "SELECT 1"])
    assert "trace_platform.core.sql_gate" in modules and "sqlglot" in modules
    bad = offending(
        modules,
        (*PLATFORM, "google.protobuf", "cryptography", "trace_platform.clients", "trace_platform.gen"),
        ALLOWED,
    )
    assert not bad, f"`trace sql check` imported {bad}"


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "some-job", "--json"],
        ["pause", "some-job"],
        ["task", "get", "00000000-0000-0000-0000-000000000001"],
        ["query", "--dataset", "x.y", "SELECT 1 FROM dataset"],
        ["query", "--dataset", "x.y", "--format", "json", "SELECT 1 FROM dataset"],
    ],
    ids=lambda a: "-".join(a[:3]),
)
def test_rpc_commands_load_grpc_and_their_client_not_the_servers(argv: list[str], tmp_path: Path) -> None:
    # Nothing listens there: the command goes as far as its RPC and fails UNAVAILABLE.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_ADDR=f"127.0.0.1:{free_port()}",
        TRACE_ADMIN_TOKEN="admin",
        TRACE_USER_TOKEN="user",
        TRACE_DATA_DIR=str(tmp_path),
    )
    modules = loaded(argv, env=env)
    assert "grpc" in modules, "the command never reached its RPC"
    bad = offending(modules, (*SERVER_SIDE, "sqlglot", "cryptography"), ALLOWED)
    assert not bad, f"`trace {' '.join(argv)}` imported {bad}"
