"""A bounded pool of hardened databases with a short admission queue.

``slots`` databases each run one query at a time (the Query Service's concurrency
cap); up to ``queue`` more requests wait at most ``wait_seconds`` for one; anything
beyond is refused at once with RESOURCE_EXHAUSTED so overload stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from trace_platform.adapters.duckdb.hardened import DuckDBLimits, HardenedDatabase
from trace_platform.core.errors import ResourceExhausted


class DatabasePool:
    def __init__(self, work_dir: Path, limits: DuckDBLimits, slots: int, queue: int, wait_seconds: float) -> None:
        self._work_dir = work_dir
        self._limits = limits
        self._slots = slots
        self._max_waiting = queue
        self._wait_seconds = wait_seconds
        self._free: asyncio.Queue[HardenedDatabase] = asyncio.Queue()
        self._waiting = 0
        self._all: set[HardenedDatabase] = set()

    async def start(self) -> None:
        self._work_dir = await asyncio.to_thread(_process_dir, self._work_dir)
        for _ in range(self._slots):
            db = await asyncio.to_thread(HardenedDatabase, self._work_dir, self._limits)
            self._all.add(db)
            self._free.put_nowait(db)

    @property
    def in_use(self) -> int:
        return self._slots - self._free.qsize()

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[HardenedDatabase]:
        db = await self._admit()
        try:
            yield db
        finally:
            if db.spilled():
                db = await self._replace(db)
            self._free.put_nowait(db)

    async def _admit(self) -> HardenedDatabase:
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._free.get_nowait()
        if self._waiting >= self._max_waiting:
            raise ResourceExhausted("QUERY_CAPACITY", "too many concurrent queries; retry later")
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._free.get(), self._wait_seconds)
        except TimeoutError:
            raise ResourceExhausted("QUERY_CAPACITY", "too many concurrent queries; retry later") from None
        finally:
            self._waiting -= 1

    async def _replace(self, db: HardenedDatabase) -> HardenedDatabase:
        self._all.discard(db)
        await asyncio.to_thread(db.close)
        fresh = await asyncio.to_thread(HardenedDatabase, self._work_dir, self._limits)
        self._all.add(fresh)
        return fresh

    async def close(self) -> None:
        for db in list(self._all):
            await asyncio.to_thread(db.close)
        self._all.clear()
        await asyncio.to_thread(shutil.rmtree, self._work_dir, True)


def _process_dir(parent: Path) -> Path:
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
