"""Roles in real subprocesses (`trace serve ROLE...`); the ``procs`` fixture (tests/conftest.py)
stops them when the test ends."""

from __future__ import annotations

import subprocess

from tests.e2e.conftest import spawn, trace_env, wait_for_line
from trace_platform.core.config import Settings


def serve(
    procs: list[subprocess.Popen[str]], settings: Settings, roles: list[str], **env: str
) -> tuple[subprocess.Popen[str], str]:
    """`trace serve ROLES` on a free loopback port; the process and its address."""
    proc = spawn(
        ["serve", *roles, "--listen", "127.0.0.1:0"],
        trace_env(settings, TRACE_QUERY_SLOTS="1", TRACE_QUERY_THREADS="1", **env),
    )
    procs.append(proc)
    return proc, wait_for_line(proc, rf"{' '.join(roles)} serving on (\S+)", timeout=60)
