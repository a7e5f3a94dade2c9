"""The Lite sandbox: what this machine can enforce, the wrapper command that enforces
it, and running one process with bounded output and a wall-clock timeout.

The wrapper is a chain of util-linux programs that each set something up and ``exec``
the next, so no helper stays resident and no ``preexec_fn`` runs in this
multi-threaded process:

    unshare --net --pid --fork --mount-proc --kill-child   (user ns too when not root)
      prlimit --cpu --as --fsize --nproc --nofile --core
        setpriv --no-new-privs [--reuid/--regid UID --clear-groups --bounding-set=-all]
          <runtime command>

- network namespace: only a loopback interface that is down, so no TCP/UDP anywhere;
  the task API is reached through a unix socket bridged by the invoker (``bridge``).
- pid namespace with its own /proc: the UDF sees no other process (so no
  ``/proc/<pid>/environ`` of the platform), and when its init dies the kernel kills
  everything left in it.
- as root: a distinct uid per concurrent invocation (no file, signal or ptrace access
  to the platform or to other UDFs, and RLIMIT_NPROC counts only this UDF).
- ``start_new_session`` + ``killpg(SIGKILL)`` at the wall-clock deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from trace_platform.core.config import UdfLimits
from trace_platform.core.errors import Unavailable

PIDNS_FLAGS = ("--pid", "--fork", "--mount-proc", "--kill-child")


@dataclass(frozen=True)
class SandboxPlan:
    """What the probe found this machine allows."""

    unshare: str | None
    prlimit: str
    setpriv: str
    userns: bool
    netns: bool
    pidns: bool
    switch_uid: bool

    def describe(self) -> str:
        parts = [
            "netns" if self.netns else "HOST NETWORK",
            "pidns+proc" if self.pidns else "shared pid namespace",
            "userns" if self.userns else "",
            "per-invocation uid" if self.switch_uid else "same uid as the invoker",
            "rlimits",
            "no_new_privs",
        ]
        return ", ".join(p for p in parts if p)


def _works(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def probe(network: str = "auto") -> SandboxPlan:
    """Find the strongest isolation available. ``network='isolated'`` fails closed."""
    prlimit, setpriv, unshare = shutil.which("prlimit"), shutil.which("setpriv"), shutil.which("unshare")
    if not prlimit or not setpriv:
        raise Unavailable("SANDBOX_UNAVAILABLE", "prlimit and setpriv (util-linux) are required")
    root = os.geteuid() == 0
    found: tuple[bool, bool] | None = None
    if network != "host" and unshare:
        base = [unshare] if root else [unshare, "--user", "--map-current-user"]
        for pidns in (True, False):
            argv = [*base, "--net", *(PIDNS_FLAGS if pidns else ()), "--", "/bin/true"]
            if _works(argv):
                found = (True, pidns)
                break
    if found is None and network == "isolated":
        raise Unavailable("SANDBOX_NETNS_UNAVAILABLE", "network isolation required but no network namespace")
    netns, pidns = found or (False, False)
    return SandboxPlan(unshare, prlimit, setpriv, netns and not root, netns, pidns, root)


class UidPool:
    """Distinct uids for concurrent invocations (used only when running as root)."""

    def __init__(self, base: int, count: int) -> None:
        self._base, self._count, self._next = base, count, 0
        self._used: set[int] = set()

    def acquire(self) -> int:
        for _ in range(self._count):
            uid = self._base + self._next
            self._next = (self._next + 1) % self._count
            if uid not in self._used:
                self._used.add(uid)
                return uid
        raise Unavailable("SANDBOX_UIDS_EXHAUSTED", "no free sandbox uid")

    def release(self, uid: int) -> None:
        self._used.discard(uid)


def wrapper_argv(plan: SandboxPlan, limits: UdfLimits, uid: int | None) -> list[str]:
    argv: list[str] = []
    if plan.netns and plan.unshare:
        argv += [plan.unshare, *(("--user", "--map-current-user") if plan.userns else ()), "--net"]
        argv += [*(PIDNS_FLAGS if plan.pidns else ()), "--"]
    cpu = max(1, int(limits.cpu_seconds))
    argv += [
        plan.prlimit,
        f"--cpu={cpu}:{cpu + 1}",
        f"--as={limits.memory_bytes}",
        f"--fsize={limits.file_size_bytes}",
        f"--nproc={limits.max_processes}",
        f"--nofile={limits.max_open_files}",
        "--core=0",
        "--",
        plan.setpriv,
        "--no-new-privs",
    ]
    if uid is not None:
        argv += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    return [*argv, "--"]


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int
    stdout: bytes
    stdout_overflow: bool
    stderr_tail: bytes
    timed_out: bool
    duration_seconds: float


async def _read_capped(stream: asyncio.StreamReader, limit: int, on_overflow: asyncio.Event) -> tuple[bytes, bool]:
    """Keep at most ``limit`` bytes; past that, signal and keep draining (a paused pipe
    would never see EOF, and asyncio would never report the process gone)."""
    buf = bytearray()
    over = False
    while chunk := await stream.read(65536):
        if over:
            continue
        if len(buf) + len(chunk) > limit:
            over = True
            on_overflow.set()
            continue
        buf += chunk
    return (b"", True) if over else (bytes(buf), False)


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    buf = bytearray()
    while chunk := await stream.read(65536):
        buf += chunk
        if len(buf) > limit:
            del buf[: len(buf) - limit]
    return bytes(buf)


T = TypeVar("T")


def _finished(task: asyncio.Task[T], default: T) -> T:
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result()
    return default


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_bounded(
    argv: list[str], stdin: bytes, env: dict[str, str], cwd: Path, limits: UdfLimits, timeout: float
) -> ProcessOutcome:
    """Run ``argv`` in a new session; kill its whole process group at ``timeout``
    or as soon as stdout exceeds its cap. stderr keeps only its last bytes."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    pgid = proc.pid  # start_new_session: the child leads its own group
    overflow = asyncio.Event()

    async def feed() -> None:
        assert proc.stdin
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()

    feeder = asyncio.create_task(feed())
    out_task = asyncio.create_task(_read_capped(proc.stdout, limits.stdout_limit_bytes, overflow))
    err_task = asyncio.create_task(_read_tail(proc.stderr, limits.stderr_limit_bytes))
    waiter = asyncio.create_task(proc.wait())
    overflow_wait = asyncio.create_task(overflow.wait())
    timed_out = False
    try:
        done, _ = await asyncio.wait({waiter, overflow_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            timed_out = True
        if waiter not in done:
            kill_group(pgid)
        await waiter
        kill_group(pgid)  # anything the UDF left running in its group
        # Readers end when every holder of the pipes is gone; do not wait for ever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(out_task, err_task, return_exceptions=True), 2.0)
    finally:
        overflow_wait.cancel()
        for task in (feeder, out_task, err_task, waiter):
            if not task.done():
                task.cancel()
        if proc.returncode is None:
            kill_group(pgid)
    stdout, over = _finished(out_task, (b"", False))
    stderr = _finished(err_task, b"")
    return ProcessOutcome(
        returncode=proc.returncode if proc.returncode is not None else -9,
        stdout=stdout,
        stdout_overflow=over or overflow.is_set(),
        stderr_tail=stderr,
        timed_out=timed_out,
        duration_seconds=time.monotonic() - started,
    )


async def kill_uid(setpriv: str, uid: int) -> None:
    """Kill every process left with ``uid`` (``kill -1`` as that uid signals exactly them)."""
    proc = await asyncio.create_subprocess_exec(
        setpriv,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
        "/bin/kill",
        "-KILL",
        "-1",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await proc.wait()
