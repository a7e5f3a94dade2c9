"""A bounded pool of hardened databases with a short admission queue.

``slots`` requests run at once, each on a database of its own; up to ``queue`` more
requests wait at most ``wait_seconds`` for a slot; anything beyond is refused at once
with RESOURCE_EXHAUSTED so overload stays cheap. The Query Service runs one such pool in
each of its query processes (``servers/query/worker_loop.py``), with one slot.

Granted databases (any store) are made as concurrent requests need them, at most
``slots``. Pinned databases (one set of local
dataset versions each) are made on first use and kept idle for the next request on the
same versions, at most ``pinned_idle`` of them, least recently used closed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from trace_platform.adapters.duckdb.hardened import DuckDBLimits, HardenedDatabase, PinnedFiles
from trace_platform.core.errors import ResourceExhausted


class Admission:
    """At most ``slots`` holders at once; up to ``queue`` more wait at most ``wait_seconds``;
    anything beyond is refused at once with RESOURCE_EXHAUSTED (QUERY_CAPACITY)."""

    def __init__(self, slots: int, queue: int, wait_seconds: float) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_waiting = queue
        self._wait_seconds = wait_seconds
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self._admit()
        try:
            yield
        finally:
            self._slots.release()

    async def _admit(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        if self._waiting >= self._max_waiting:
            raise ResourceExhausted("QUERY_CAPACITY", "too many concurrent queries; retry later")
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self._wait_seconds)
        except TimeoutError:
            raise ResourceExhausted("QUERY_CAPACITY", "too many concurrent queries; retry later") from None
        finally:
            self._waiting -= 1


class DatabasePool:
    def __init__(
        self,
        work_dir: Path,
        limits: DuckDBLimits,
        slots: int,
        queue: int,
        wait_seconds: float,
        pinned_idle: int = 16,
    ) -> None:
        self._work_dir = work_dir
        self._limits = limits
        self._pinned_idle = pinned_idle
        self._admission = Admission(slots, queue, wait_seconds)
        self._free: asyncio.Queue[HardenedDatabase] = asyncio.Queue()
        self._idle: OrderedDict[PinnedFiles, list[HardenedDatabase]] = OrderedDict()
        self._all: set[HardenedDatabase] = set()

    async def start(self) -> None:
        """One granted database now, so a DuckDB that cannot be hardened stops start-up;
        the others are made when concurrent requests first need them (with local stores
        most requests run on pinned databases and never do)."""
        self._work_dir = await asyncio.to_thread(process_dir, self._work_dir)
        self._free.put_nowait(await self._make(None))

    async def _make(self, pinned: PinnedFiles | None) -> HardenedDatabase:
        db = await asyncio.to_thread(HardenedDatabase, self._work_dir, self._limits, pinned)
        self._all.add(db)
        return db

    @contextlib.asynccontextmanager
    async def database(self, pinned: PinnedFiles | None = None) -> AsyncIterator[HardenedDatabase]:
        """A database for one request: a granted one, or one pinned to ``pinned``."""
        async with self._admission.slot():
            if pinned is not None:
                db = await self._pinned(pinned)
            else:  # a held slot guarantees fewer than `slots` granted databases are in use
                db = self._free.get_nowait() if not self._free.empty() else await self._make(None)
            try:
                yield db
            finally:
                await self._release(db)

    async def _pinned(self, pinned: PinnedFiles) -> HardenedDatabase:
        idle = self._idle.get(pinned)
        if idle:
            db = idle.pop()
            if not idle:
                del self._idle[pinned]
            return db
        return await self._make(pinned)

    async def _release(self, db: HardenedDatabase) -> None:
        if db.spilled():
            await self._discard(db)  # a fresh one is made when next needed
            return
        if db.pinned is None:
            self._free.put_nowait(db)
            return
        self._idle.setdefault(db.pinned, []).append(db)
        self._idle.move_to_end(db.pinned)
        while sum(len(dbs) for dbs in self._idle.values()) > self._pinned_idle:
            oldest = next(iter(self._idle))
            dbs = self._idle[oldest]
            victim = dbs.pop(0)
            if not dbs:
                del self._idle[oldest]
            await self._discard(victim)

    async def _discard(self, db: HardenedDatabase) -> None:
        self._all.discard(db)
        await asyncio.to_thread(db.close)

    async def close(self) -> None:
        for db in list(self._all):
            await asyncio.to_thread(db.close)
        self._all.clear()
        self._idle.clear()
        await asyncio.to_thread(shutil.rmtree, self._work_dir, True)


def process_dir(parent: Path) -> Path:
    """A private directory for this process; directories of dead processes are removed."""
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for old in parent.glob("pid-*"):
        pid = old.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    own = parent / f"pid-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    own.mkdir(mode=0o700)
    return own


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
