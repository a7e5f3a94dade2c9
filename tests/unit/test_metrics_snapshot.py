"""LoopSnapshot: a scrape storm costs one read a second, a scrape on the loop's own thread
never waits for itself, and a loop that does not answer leaves the last value."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from trace_platform.servers.common.metrics import LoopSnapshot


async def test_concurrent_scrapes_share_one_read_per_max_age() -> None:
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)
        return reads

    snap = LoopSnapshot(read, max_age=1.0)
    with ThreadPoolExecutor(16) as pool:
        values = await asyncio.gather(*(asyncio.get_running_loop().run_in_executor(pool, snap.get) for _ in range(64)))
    assert reads == 1 and set(values) == {1}


async def test_on_the_loop_thread_it_serves_the_cache_instead_of_blocking() -> None:
    async def read() -> int:
        return 7

    snap = LoopSnapshot(read)
    started = time.monotonic()
    assert snap.get() is None  # no read yet, and no deadlock waiting for this very loop
    assert time.monotonic() - started < 0.1
    assert await asyncio.to_thread(snap.get) == 7
    assert snap.get() == 7


async def test_a_loop_that_does_not_answer_leaves_the_last_value() -> None:
    slow = False

    async def read() -> str:
        if slow:
            await asyncio.sleep(5)
        return "fresh"

    snap = LoopSnapshot(read, max_age=0.0, timeout=0.2)
    assert await asyncio.to_thread(snap.get) == "fresh"
    slow = True
    started = time.monotonic()
    assert await asyncio.to_thread(snap.get) == "fresh"
    assert time.monotonic() - started < 1.0


def test_without_a_loop_there_are_no_samples() -> None:
    async def read() -> int:
        return 1

    assert LoopSnapshot(read).get() is None
