"""The Query Service's query processes: pre-started workers that run DuckDB for it.

Invariants kept here:

- At most ``slots`` requests hold a process at once (``Admission``: a short queue, then
  QUERY_CAPACITY); ``slots + SPARE`` processes are kept started, so while one killed at a
  deadline is being replaced a warm one serves the next request.
- A request past its deadline, or whose call is cancelled or abandoned, has its process
  killed (SIGKILL) before its slot is released: the slot is free once the kill has
  happened, and no query outlives its answer whatever the SQL does.
- A process goes back to the idle set only after a complete exchange (DONE, or a refusal
  it survives); any other ending kills it, and a fresh one is started in the background.
- The service decodes nothing from a process beyond frames of bounded size: rows are
  protobuf (a total bounded by the message cap), QueryArrow's bytes pass through as they
  came. DuckDB runs outside the service's GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import pickle
import shutil
import sys
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trace_platform.adapters.duckdb.granted_fs import GrantedObject
from trace_platform.adapters.duckdb.hardened import HardeningFailed, PinnedFiles, Views
from trace_platform.adapters.duckdb.pool import Admission, process_dir
from trace_platform.core.config import QuerySettings
from trace_platform.core.defaults import MAX_MESSAGE_BYTES
from trace_platform.core.errors import DeadlineExceeded, Internal, ResourceExhausted, Unavailable
from trace_platform.gen.trace.v1 import common_pb2, query_pb2
from trace_platform.servers.query.execute import arrow_frame, too_large
from trace_platform.servers.query.frames import FrameError, Kind, encode, encode_json, failure, read_frame
from trace_platform.servers.query.remote_reads import ObjectReads
from trace_platform.servers.query.worker_loop import MEMORY_LIMIT, QueryRequest

log = logging.getLogger(__name__)

SPARE = 1
# Pinned databases each process keeps for the next request on the same versions.
PINNED_PER_PROCESS = 4
START_SECONDS = 60.0
# An answer must fit one gRPC message with room for its columns and framing.
MAX_ANSWER_BYTES = MAX_MESSAGE_BYTES - (256 << 10)


@dataclass(frozen=True)
class LimitedResult:
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type)
    rows: Sequence[common_pb2.Row]
    truncated: bool


class _Process:
    def __init__(self, proc: asyncio.subprocess.Process, directory: Path) -> None:
        self.proc = proc
        self.dir = directory
        self.pinned: OrderedDict[PinnedFiles, None] = OrderedDict()  # mirrors the process's own
        self.address_space = 0
        self.clean = False  # at a frame boundary after a complete exchange

    async def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def frame(self) -> tuple[Kind, bytes]:
        assert self.proc.stdout is not None
        return await read_frame(self.proc.stdout)

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


class QueryWorkers:
    def __init__(self, work_dir: Path, settings: QuerySettings, readonly: Sequence[Path]) -> None:
        self._parent = work_dir
        self._settings = settings
        self._readonly = [str(p.resolve()) for p in readonly]
        self._admission = Admission(settings.slots, settings.admission_queue, settings.admission_wait_seconds)
        self._idle: list[_Process] = []
        self._changed = asyncio.Condition()
        self._all: set[_Process] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._dir = work_dir
        self._closed = False
        self._reads = ObjectReads()

    async def start(self) -> None:
        """Every process started and its database hardened, or start-up fails."""
        self._dir = await asyncio.to_thread(process_dir, self._parent)
        started = await asyncio.gather(
            *(self._spawn_retrying() for _ in range(self._settings.slots + SPARE)), return_exceptions=True
        )
        self._idle = [p for p in started if isinstance(p, _Process)]
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed:
            await self.close()
            raise failed[0]

    def pids(self) -> list[int]:
        """The live query processes (for tests and operators)."""
        return [p.proc.pid for p in self._all if p.proc.returncode is None]

    def address_space(self) -> int:
        """The address-space cap of the query processes (the largest, in bytes)."""
        return max((p.address_space for p in self._all), default=0)

    def _config(self, directory: Path) -> dict[str, Any]:
        q = self._settings
        return {
            "work_dir": str(directory.resolve()),
            "readonly": [p for p in self._readonly if os.path.isdir(p)],
            "allow_writable_versions": q.allow_writable_versions,
            "memory_limit": q.memory_limit,
            "threads": q.threads,
            "temp_limit": q.temp_limit,
            "headroom": q.process_headroom,
            "pinned_idle": PINNED_PER_PROCESS,
        }

    async def _spawn(self) -> _Process:
        directory = self._dir / f"worker-{next(self._seq)}"
        await asyncio.to_thread(directory.mkdir, 0o700)
        # Start-up errors go to a file the service reads if the process dies before it is
        # ready; once ready the process points stderr at /dev/null (DuckDB's text may quote SQL).
        startup_log = directory / "startup.log"
        stderr = await asyncio.to_thread(os.open, startup_log, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trace_platform.servers.query.worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=_environment(),
                cwd=directory,
            )
        finally:
            os.close(stderr)
        process = _Process(proc, directory)
        self._all.add(process)
        try:
            await process.send(encode_json(Kind.CONFIG, self._config(directory)))
            kind, payload = await asyncio.wait_for(process.frame(), START_SECONDS)
            if kind is Kind.FAILED:
                error = failure(payload)
                raise HardeningFailed(error.message) if isinstance(error, Internal) else error
            if kind is not Kind.READY:
                raise FrameError("unexpected frame at start")
            process.address_space = int(json.loads(payload)["address_space"])
        except FrameError:
            await process.proc.wait()
            tail = await asyncio.to_thread(_tail, startup_log)
            await self._end(process)
            raise HardeningFailed(f"query process exited ({process.proc.returncode}) at start: {tail}") from None
        except BaseException:
            await self._end(process)
            raise
        return process

    async def _spawn_retrying(self) -> _Process:
        """One more try for a process that died without a word (a busy machine); a DuckDB
        that cannot be hardened fails both times."""
        try:
            return await self._spawn()
        except HardeningFailed:
            log.warning("a query process failed to start; trying once more", exc_info=True)
            return await self._spawn()

    async def _end(self, process: _Process) -> None:
        process.kill()
        self._all.discard(process)
        await process.proc.wait()
        await asyncio.to_thread(shutil.rmtree, process.dir, True)

    async def _take(self, pinned: PinnedFiles | None) -> _Process:
        """An idle process, preferably one that already holds ``pinned``'s database."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._idle))
            chosen = self._idle[0]
            if pinned is not None:
                chosen = next((p for p in reversed(self._idle) if pinned in p.pinned), chosen)
            self._idle.remove(chosen)
            chosen.clean = False
            return chosen

    async def _give_back(self, process: _Process, pinned: PinnedFiles | None) -> None:
        if process.clean and process.proc.returncode is None and not self._closed:
            if pinned is not None:
                process.pinned[pinned] = None
                process.pinned.move_to_end(pinned)
                while len(process.pinned) > PINNED_PER_PROCESS:
                    process.pinned.popitem(last=False)
            async with self._changed:
                self._idle.append(process)
                self._changed.notify()
            return
        process.kill()  # before the slot is released (the caller's finally)
        self._all.discard(process)
        task = asyncio.create_task(self._replace(process))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _replace(self, old: _Process) -> None:
        await self._end(old)
        while not self._closed:
            try:
                fresh = await self._spawn()
            except Exception:
                log.exception("a query process failed to start; retrying")
                await asyncio.sleep(1.0)
                continue
            if self._closed:
                await self._end(fresh)
                return
            async with self._changed:
                self._idle.append(fresh)
                self._changed.notify()
            return

    async def _answer(
        self,
        request: QueryRequest,
        objects: tuple[GrantedObject, ...],
        timeout: float,
        started: Callable[[], None] | None,
    ) -> AsyncGenerator[tuple[Kind, bytes], None]:
        """The frames of one answer up to DONE (the last); a FAILED frame is raised as its error."""
        deadline = asyncio.get_running_loop().time() + timeout
        granted = {o.virtual_path: o for o in objects}
        async with self._admission.slot():
            process = None
            try:
                async with asyncio.timeout_at(deadline):
                    process = await self._take(request.pinned)
                    await process.send(encode(Kind.REQUEST, pickle.dumps(request)))
                if started is not None:
                    started()
                while True:
                    async with asyncio.timeout_at(deadline):
                        kind, payload = await process.frame()
                    if kind is Kind.OPEN or kind is Kind.READ:
                        async with asyncio.timeout_at(deadline):
                            await process.send(await self._reads.answer(kind, payload, granted))
                        continue
                    if kind is Kind.DONE:
                        process.clean = True
                        yield kind, payload
                        return
                    if kind is Kind.FAILED:
                        error = failure(payload)
                        process.clean = not isinstance(error, Internal) and error.reason != MEMORY_LIMIT
                        raise error
                    yield kind, payload
            except TimeoutError:
                raise DeadlineExceeded("QUERY_TIMEOUT", f"query exceeded {timeout:g} s") from None
            except FrameError:
                # The process ended mid-answer: the address-space cap (or the OOM killer).
                raise ResourceExhausted(MEMORY_LIMIT, "the query ran out of memory") from None
            except ConnectionError:  # it had ended before the request reached it
                raise Unavailable("QUERY_PROCESS_ENDED", "the query process ended; retry") from None
            finally:
                if process is not None:
                    await self._give_back(process, request.pinned)

    async def rows(
        self,
        objects: tuple[GrantedObject, ...],
        pinned: PinnedFiles | None,
        sql: str,
        limit: int,
        timeout: float,
        started: Callable[[], None] | None = None,
        views: Views = (),
    ) -> LimitedResult:
        """At most ``limit`` rows (truncated says whether more exist), within one message."""
        request = QueryRequest(sql, _shown(objects, pinned), pinned, MAX_ANSWER_BYTES, limit=limit, views=views)
        columns: tuple[tuple[str, str], ...] = ()
        answer = query_pb2.TaskQueryResponse()
        size = 0
        truncated = False
        async with contextlib.aclosing(self._answer(request, objects, timeout, started)) as frames:
            async for kind, payload in frames:
                if kind is Kind.COLUMNS:
                    columns = tuple((str(n), str(t)) for n, t in json.loads(payload))
                elif kind is Kind.ROWS:
                    size += len(payload)
                    if size > MAX_ANSWER_BYTES:  # the process checks this too; it is not trusted
                        raise too_large(MAX_ANSWER_BYTES)
                    answer.MergeFromString(payload)
                elif kind is Kind.DONE:
                    truncated = bool(json.loads(payload)["truncated"])
                else:
                    raise Internal("QUERY_PROCESS_FAILED", "unexpected frame from the query process")
        return LimitedResult(columns, answer.rows, truncated)

    async def arrow(
        self,
        objects: tuple[GrantedObject, ...],
        pinned: PinnedFiles | None,
        sql: str,
        batch_rows: int,
        timeout: float,
        started: Callable[[], None] | None = None,
        views: Views = (),
    ) -> AsyncGenerator[tuple[int, bytes], None]:
        """(rows, bytes) per message of the QueryArrow stream, as the process produced them."""
        shown = _shown(objects, pinned)
        request = QueryRequest(sql, shown, pinned, MAX_ANSWER_BYTES, arrow_batch_rows=batch_rows, views=views)
        async with contextlib.aclosing(self._answer(request, objects, timeout, started)) as frames:
            async for kind, payload in frames:
                if kind is Kind.ARROW:
                    yield arrow_frame(payload)
                elif kind is not Kind.DONE:
                    raise Internal("QUERY_PROCESS_FAILED", "unexpected frame from the query process")

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for process in list(self._all):
            await self._end(process)
        self._idle.clear()
        self._reads.close()
        await asyncio.to_thread(shutil.rmtree, self._dir, True)


def _shown(objects: tuple[GrantedObject, ...], pinned: PinnedFiles | None) -> tuple[tuple[str, int], ...]:
    """What the process learns of the objects: a pinned database reads its own files, any
    other reads go through the service (no store filesystem or credential leaves it)."""
    return () if pinned is not None else tuple((o.virtual_path, o.size) for o in objects)


_PASSED_ENV = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "TZ")


def _environment() -> dict[str, str]:
    """The process's environment: none of the service's secrets (database URL, tokens,
    store credentials: it reads objects through the service), and fewer 64 MB malloc
    arenas under the address-space cap."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env["MALLOC_ARENA_MAX"] = "2"
    return env


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace").strip() or "no output"
    except OSError:
        return "no output"
