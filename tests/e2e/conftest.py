from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO

from trace_platform.core.config import Settings


def trace_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DATABASE_URL=settings.database_url or "",
        TRACE_WORKER_TOKEN=settings.worker_token or "",
        TRACE_ADMIN_TOKEN=settings.admin_token or "",
        TRACE_DATA_DIR=str(settings.data_dir),
        TRACE_TOKEN_KEY_DIR=str(settings.tokens.key_dir),
        TRACE_SCRATCH_URI=settings.scratch_uri or "",
        TRACE_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trace_platform", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class LineReader:
    """Collects a process's output lines on a thread (select() and buffered readline don't mix)."""

    def __init__(self, pipe: IO[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.everything: list[str] = []
        self.thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self.thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self.everything.append(line)
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self.seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m.group(1) if m.groups() else m.group(0)
        raise AssertionError(f"no line matching {pattern!r}; got: {''.join(self.seen)[-2000:]}")


# Keyed by the pipe object itself: id() values are reused once a pipe is collected.
_readers: weakref.WeakKeyDictionary[IO[str], LineReader] = weakref.WeakKeyDictionary()


def _reader(pipe: IO[str]) -> LineReader:
    if pipe not in _readers:
        _readers[pipe] = LineReader(pipe)
    return _readers[pipe]


def wait_for_line(proc: subprocess.Popen[str], pattern: str, timeout: float = 30.0, stream: str = "stderr") -> str:
    """Wait for an output line matching pattern; returns its first group (or the whole match)."""
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    reader = _reader(pipe)
    return reader.wait_for(pattern, timeout)


def all_output(proc: subprocess.Popen[str], stream: str = "stderr") -> list[str]:
    """Every line the (exited) process wrote to the stream."""
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    reader = _reader(pipe)
    reader.thread.join(timeout=5)
    return reader.everything


def output_tail(proc: subprocess.Popen[str], lines: int = 40, stream: str = "stderr") -> list[str]:
    """The last lines the process wrote so far (it may still run): for failure messages."""
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    return _reader(pipe).everything[-lines:]
