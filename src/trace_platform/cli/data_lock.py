"""One `trace lite up` per data directory.

An exclusive ``flock`` on ``<data dir>/lite.lock``, taken before anything in the directory
is touched and held for the life of the process (the kernel drops it when the process
dies, so a crash leaves no stale lock). The holder writes its pid into the file so a
second start can say who holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from trace_platform.cli.common import CliError

LOCK_NAME = "lite.lock"


@contextlib.contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's lock, or raise CliError (exit 1) naming the dir and the holder's pid."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise CliError(
                f"data directory {data_dir} is in use by another `trace lite up`{pid}",
                hint="stop it, or use another --data-dir / TRACE_DATA_DIR",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
