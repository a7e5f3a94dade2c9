"""A query process: trusted code that runs untrusted (gated) SQL on hardened DuckDB
databases, one request at a time, behind walls of the operating system.

Before DuckDB is loaded the process makes itself a private mount namespace in which the
data directory and every file root are read-only (its own work directory alone stays
writable), so SQL cannot write into a dataset version even with the gate and DuckDB's
own checks bypassed. Once its first database is hardened it caps its address space
(RLIMIT_AS: what it has mapped, plus the DuckDB memory limit, plus a headroom), so a
string or list builder that DuckDB's memory limit does not see fails inside this
process, or ends it, and never grows the service. It dies with the service
(PR_SET_PDEATHSIG) and is killed outright (SIGKILL) at a query's deadline; the service
starts another.

Run by the service as ``python -m trace_platform.servers.query.worker`` with the frames
of ``frames.py`` on stdin and stdout; nothing else may write to stdout, so fd 1 is
pointed at /dev/null once the protocol has its own copy.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from trace_platform.core.errors import Unavailable
from trace_platform.servers.query.frames import Kind, failure_frame, read_frame_sync

_CLONE_NEWNS, _CLONE_NEWUSER = 0x00020000, 0x10000000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG = 1
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_bytes(text: str) -> int:
    """``"512MB"``, ``"1 GiB"`` and the like, as DuckDB reads its size settings."""
    value = text.strip().upper()
    digits = value.rstrip("KMGTIB ")
    return int(float(digits) * _UNITS[value[len(digits) :].strip()])


def _libc_call(libc: ctypes.CDLL, name: str, *args: Any) -> None:
    if getattr(libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def readonly_mounts(readonly: list[str], writable: str) -> None:
    """A private mount namespace: ``readonly`` bind-mounted read-only onto themselves,
    then ``writable`` (inside one of them) bound back read-write. Nothing propagates to
    the host. Without root, a user namespace maps the current user first."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0:
        _libc_call(libc, "unshare", _CLONE_NEWNS)
    else:
        _libc_call(libc, "unshare", _CLONE_NEWUSER | _CLONE_NEWNS)
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
    _libc_call(libc, "mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)
    for path in [*readonly, writable]:
        target = os.fsencode(path)
        _libc_call(libc, "mount", target, target, None, _MS_BIND | _MS_REC, None)
        flags = _MS_REMOUNT | _MS_BIND | (_MS_RDONLY if path != writable else 0)
        _libc_call(libc, "mount", None, target, None, flags, None)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    _libc_call(libc, "prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the service ended before the death signal was armed
        sys.exit(0)


def _mapped_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    stdin = sys.stdin.buffer
    _die_with_parent()
    frame = read_frame_sync(stdin)
    if frame is None or frame[0] is not Kind.CONFIG:
        sys.exit(2)
    config = json.loads(frame[1])
    try:
        readonly_mounts(config["readonly"], config["work_dir"])
    except OSError:
        if not config["allow_writable_versions"]:
            out.write(failure_frame(Unavailable("QUERY_ISOLATION_UNAVAILABLE", "no read-only mount namespace")))
            out.flush()
            sys.exit(1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file holding query data
    # Only now load DuckDB and the rest (the namespace had to come first).
    from trace_platform.servers.query.worker_loop import serve

    serve(config, stdin, out, _mapped_bytes)


if __name__ == "__main__":
    main()
