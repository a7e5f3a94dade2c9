"""The Lite sandbox: what this machine can enforce, the wrapper command that enforces
it, and running one process with bounded output and a wall-clock timeout.

The wrapper is a chain of programs that each set something up and ``exec`` the next,
so no helper stays resident and no ``preexec_fn`` runs in this multi-threaded process:

    bwrap --unshare-{ipc,pid,net,uts,cgroup} [--unshare-user when not root]
          --die-with-parent --cap-drop ALL [--cap-add SETUID,SETGID,SETPCAP as root]
          <the minimal root of ``mountns``> --             (bwrap sets no_new_privs)
      sh -c 'ulimit (cpu, as, fsize, nproc, nofile, core); unset PWD; exec "$@"'
        [setpriv --no-new-privs --reuid/--regid UID --clear-groups --bounding-set=-all]
          <runtime command>

Every exec costs about a millisecond here, as much as a Rust UDF's whole run: one
``sh`` does what ``env -u PWD`` and ``prlimit`` did (same limits, set at the same point
of the chain), and ``setpriv`` runs only to switch the uid (as root).

- mount namespace with a minimal root (``mountns``): the bundle read-only, private
  /tmp and /dev/shm, the runtime, no host socket, data directory or home.
- network namespace: only the namespace's own loopback (bwrap brings it up; nothing of
  the host listens there), so no TCP/UDP to anywhere else and no abstract unix socket
  of the host; the task API is reached through a unix socket bridged by the invoker
  (``bridge``), the one path bound in from outside.
- pid namespace with its own /proc: the UDF sees no other process (so no
  ``/proc/<pid>/environ`` of the platform), and when bwrap's init in it dies (the
  command ended, or bwrap was killed: ``--die-with-parent``) the kernel kills
  everything left in it.
- as root: a distinct uid per concurrent invocation (no file, signal or ptrace access
  to the platform or to other UDFs, and RLIMIT_NPROC counts only this UDF).
- ``start_new_session`` + ``killpg(SIGKILL)`` at the wall-clock deadline.

Fail closed: when the probe cannot make these namespaces the plan says why
(``unavailable``) and the invoker refuses to run bundles, unless a development setting
allows running them with rlimits and the uid switch only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from trace_platform.adapters.invoker import mountns
from trace_platform.core.config import UdfLimits
from trace_platform.core.errors import Unavailable

PROBE_UID = 65534  # nobody: the probe checks that the uid switch works inside bwrap
PROBE_CHECK = (
    "/bin/sh",
    "-c",
    "grep -qE '^NoNewPrivs:[[:space:]]+1$' /proc/self/status && grep -qE '^CapEff:[[:space:]]+0+$' /proc/self/status"
    " || { echo 'no_new_privs unset or capabilities left inside the sandbox' >&2; exit 1; }",
)
# Root's own directory (only root switches uids): who holds which sandbox uid.
UID_LOCK_DIR = Path("/run/trace-sandbox-uids")


@dataclass(frozen=True)
class SandboxPlan:
    """What the probe found this machine allows. ``bwrap`` is None when no sandbox
    could be made, and ``unavailable`` then says why."""

    prlimit: str
    setpriv: str
    switch_uid: bool
    bwrap: str | None = None
    userns: bool = False
    root: tuple[str, ...] = ()  # mountns.root_args: the read-only part of the root
    unavailable: str = ""

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    @property
    def netns(self) -> bool:
        """The network namespace comes with the mount namespace, never without it."""
        return self.isolated

    def describe(self) -> str:
        parts = (
            ["mountns (minimal read-only root, private /tmp and /dev/shm)", "netns", "pidns+proc", "ipc+uts ns"]
            if self.isolated
            else [f"UNSANDBOXED ({self.unavailable}): host file system and network"]
        )
        parts += [
            "userns" if self.userns else "",
            "per-invocation uid" if self.switch_uid else "same uid as the invoker",
            "rlimits",
            "no_new_privs",
        ]
        return ", ".join(p for p in parts if p)


def _run(argv: list[str]) -> str | None:
    """None when ``argv`` succeeds, else the first line of what went wrong."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode == 0:
        return None
    first = done.stderr.decode("utf-8", "replace").strip().splitlines()[:1]
    return first[0][:200] if first else f"exit status {done.returncode}"


def probe(bwrap: str, runtimes: Sequence[str], search_path: str) -> SandboxPlan:
    """Find whether this machine can make the sandbox, by running it once (the same
    argv shape as a real run), ending in a check of what the chain relies on bwrap
    for: no_new_privs set and no effective capability left."""
    prlimit, setpriv = shutil.which("prlimit"), shutil.which("setpriv")
    if not prlimit or not setpriv:
        raise Unavailable("SANDBOX_UNAVAILABLE", "prlimit and setpriv (util-linux) are required")
    root = os.geteuid() == 0
    plan = SandboxPlan(prlimit, setpriv, switch_uid=root)
    found = shutil.which(bwrap)
    if not found:
        return replace(plan, unavailable=f"bubblewrap not found: {bwrap!r}")
    binds = mountns.runtime_binds(runtimes, search_path)
    alternatives = mountns.needs_alternatives(runtimes, search_path)
    candidate = replace(plan, bwrap=found, userns=not root, root=mountns.root_args(binds, alternatives))
    with tempfile.TemporaryDirectory(prefix="trace-probe-") as tmp:
        mounts = mountns.RunMounts(Path(tmp) / "bundle", Path(tmp) / "home", Path(tmp) / "etc")
        mounts.bundle.mkdir()
        mounts.home.mkdir()
        mountns.write_etc(mounts.etc, PROBE_UID, mounts.home)
        argv = [*wrapper_argv(candidate, UdfLimits(), PROBE_UID if root else None, mounts), *PROBE_CHECK]
        failed = _run(argv)
    if failed is not None:
        return replace(plan, unavailable=f"bubblewrap cannot make the sandbox: {failed}")
    return candidate


class UidPool:
    """Distinct uids for concurrent invocations (used only when running as root), also
    across processes: a uid in use is held by an flock on ``<lock_dir>/<uid>``, so two
    invokers on one machine never share one (the cleanup of one, ``kill -1`` as that
    uid, would kill the other's UDF). A lock dies with its holder: no stale claims."""

    def __init__(self, base: int, count: int, lock_dir: Path = UID_LOCK_DIR) -> None:
        self._base, self._count, self._next = base, count, 0
        self._lock_dir = lock_dir
        self._held: dict[int, int] = {}  # uid -> the fd holding its lock

    def _claim(self, uid: int) -> bool:
        self._lock_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self._lock_dir / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[uid] = fd
        return True

    def acquire(self) -> int:
        for _ in range(self._count):
            uid = self._base + self._next
            self._next = (self._next + 1) % self._count
            if uid not in self._held and self._claim(uid):
                return uid
        raise Unavailable("SANDBOX_UIDS_EXHAUSTED", "no free sandbox uid")

    def release(self, uid: int) -> None:
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)


def limits_argv(plan: SandboxPlan, limits: UdfLimits, uid: int | None) -> list[str]:
    """prlimit + setpriv, ending in ``--``: the whole wrapper of an unsandboxed run
    (the development setting only)."""
    cpu = max(1, int(limits.cpu_seconds))
    argv = [
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


# dash's ulimit takes one resource per call; -v in KiB, -f in 512-byte blocks (rounded
# down: never more than the configured bytes), -p is RLIMIT_NPROC. $0 is "sh".
LIMITS_SCRIPT = (
    "ulimit -S -t {cpu} && ulimit -H -t {cpu_hard} && ulimit -v {as_kib} && ulimit -f {fsize_blocks}"
    ' && ulimit -p {nproc} && ulimit -n {nofile} && ulimit -c 0 && unset PWD && exec "$@"'
)
SHELL = "/bin/sh"


def inner_argv(plan: SandboxPlan, limits: UdfLimits, uid: int | None) -> list[str]:
    """The links inside bubblewrap: the rlimits and PWD's removal in one ``sh``, then
    ``setpriv`` only when switching to the run's uid (bwrap already set no_new_privs
    and, without a uid switch, kept no capability). No trailing ``--``: the runtime
    command follows directly."""
    cpu = max(1, int(limits.cpu_seconds))
    script = LIMITS_SCRIPT.format(
        cpu=cpu,
        cpu_hard=cpu + 1,
        as_kib=max(1, limits.memory_bytes // 1024),
        fsize_blocks=max(1, limits.file_size_bytes // 512),
        nproc=limits.max_processes,
        nofile=limits.max_open_files,
    )
    argv = [SHELL, "-c", script, "sh"]
    if uid is not None:
        argv += [
            plan.setpriv,
            "--no-new-privs",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    return argv


def wrapper_argv(plan: SandboxPlan, limits: UdfLimits, uid: int | None, mounts: mountns.RunMounts | None) -> list[str]:
    """The whole chain before the runtime command. A plan that is not isolated has no
    sandbox: only the invoker's explicit development setting lets a run get here."""
    if plan.bwrap is None:
        return limits_argv(plan, limits, uid)
    if mounts is None:
        raise ValueError("an isolated run needs its mounts")
    prefix = mountns.bwrap_argv(
        plan.bwrap, plan.root, mounts, limits.tmpfs_bytes, userns=plan.userns, switch_uid=uid is not None
    )
    return prefix + inner_argv(plan, limits, uid)


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
