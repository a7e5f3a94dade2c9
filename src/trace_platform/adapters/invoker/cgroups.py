"""One memory cgroup per UDF run: the whole run shares ``UdfLimits.memory_bytes``.

RLIMIT_AS bounds each process on its own, and a UDF may fork up to ``max_processes``
of them: six children of 200 MB each ran under a 256 MB limit. A cgroup counts every
process of the run together (and the pages it writes to its tmpfs mounts), so the run
is OOM-killed at the limit however it splits its memory.

The run joins its cgroup before anything of it executes: the first link of the chain
is ``/bin/sh -c 'echo $$ > <cgroup>/cgroup.procs && exec "$@"'`` (no ``preexec_fn`` in
this multi-threaded process), and every later process inherits it.

Only where the invoker may make cgroups (root, a writable memory controller: cgroup v1
``/sys/fs/cgroup/memory`` or v2 with ``memory`` in the root's subtree control);
elsewhere ``available`` says why not and the per-process rlimits are the only bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "trace-udf"
SHELL = "/bin/sh"
JOIN_SCRIPT = 'echo $$ > "$0" && exec "$@"'


@dataclass(frozen=True)
class MemoryCgroups:
    """Where per-run memory cgroups are made, and the files that set their limit."""

    parent: Path
    limit_files: tuple[str, ...]  # v1: memory and memory+swap; v2: memory.max, no swap

    def create(self, name: str, limit_bytes: int) -> RunCgroup:
        path = self.parent / name
        path.mkdir(mode=0o755)
        try:
            for file in self.limit_files:
                value = "0" if file == "memory.swap.max" else str(limit_bytes)
                with contextlib.suppress(FileNotFoundError):  # memsw exists only with swap accounting
                    (path / file).write_text(value)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return RunCgroup(path)


@dataclass(frozen=True)
class RunCgroup:
    path: Path

    def join_argv(self) -> list[str]:
        """The chain's first link: join this cgroup, then exec the rest."""
        return [SHELL, "-c", JOIN_SCRIPT, str(self.path / "cgroup.procs")]

    def remove(self) -> None:
        """Remove the cgroup once its processes are gone (they were killed; an exiting
        process may hold it a moment)."""
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


def available(root: Path = CGROUP_ROOT) -> MemoryCgroups | str:
    """The memory cgroups this machine lets the invoker make, or why not."""
    if os.geteuid() != 0:
        return "not root"
    v1 = root / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        files: tuple[str, ...] = ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
        parent = v1 / PARENT_NAME
    elif "memory" in _read(root / "cgroup.subtree_control").split():
        files, parent = ("memory.max", "memory.swap.max"), root / PARENT_NAME
    else:
        return "no writable memory cgroup controller"
    try:
        parent.mkdir(mode=0o755, exist_ok=True)
        if parent.parent == root:  # v2: the parent passes the memory controller down
            (parent / "cgroup.subtree_control").write_text("+memory")
    except OSError as exc:
        return f"cannot make {parent}: {exc.strerror}"
    return MemoryCgroups(parent, files)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
