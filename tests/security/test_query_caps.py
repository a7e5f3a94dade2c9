"""Issue 13, hole 4: the Query Service's caps hold whatever the SQL.

Against a real platform (PostgreSQL, gRPC, the real query processes): string and list
builders that DuckDB's own memory limit does not see are refused with
QUERY_MEMORY_LIMIT while every process stays under its address-space cap (RSS read from
/proc); a query that ignores DuckDB's interrupt is answered QUERY_TIMEOUT at its deadline
and its slot is free at once, with every slot taken by such queries; an answer too large
for one message is refused at the cap without the service holding it; QueryArrow splits a
batch too large for one message; spill stops at its bound. And with the gate bypassed
(the executor layer called directly), a pinned query cannot write into a dataset
version: the process sees it through a read-only mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from tests.conftest import eventually
from tests.datasets import blocks_table, write_dataset
from tests.integration.conftest import ORG, user_client
from tests.integration.test_query_task import own_platform
from trace_platform.adapters.duckdb.hardened import DuckDBLimits, HardenedDatabase, PinnedFiles
from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform
from trace_platform.clients.api.query import ApiQueryClient, QueryRows
from trace_platform.core.config import Settings
from trace_platform.core.defaults import MAX_MESSAGE_BYTES
from trace_platform.core.errors import DeadlineExceeded, ResourceExhausted, TraceError
from trace_platform.servers.query.attach import DatasetAttacher
from trace_platform.servers.query.worker import size_bytes
from trace_platform.servers.query.workers import MAX_ANSWER_BYTES, QueryWorkers

# Each builds one value far beyond the memory limit (a GB string, a billion-element list,
# a cross join folded into one string), outside DuckDB's buffer manager. lpad and rpad
# build theirs slowly: the deadline stops them first.
BUILDERS = {
    "repeat": "SELECT length(repeat('x', 1000000000)) FROM dataset LIMIT 1",
    "lpad": "SELECT length(lpad('x', 1000000000, 'y')) FROM dataset LIMIT 1",
    "rpad": "SELECT length(rpad('x', 1000000000, 'y')) FROM dataset LIMIT 1",
    "format": "SELECT length(format('{:>1000000000}', 'x')) FROM dataset LIMIT 1",
    "printf": "SELECT length(printf('%1000000000d', 1)) FROM dataset LIMIT 1",
    "unnest": "SELECT count(*) FROM (SELECT unnest(range(1000000000)) FROM dataset)",
    "list": "SELECT len(list(repeat('x', 1000))) FROM dataset a, dataset b",
    "string_agg": "SELECT length(string_agg(repeat(a.miner, 100), ',')) FROM dataset a, dataset b",
    "cross_join": "SELECT length(string_agg(a.miner || b.miner, ',')) FROM dataset a, dataset b",
}
MEMORY_LIMIT = "256MB"
DATASET = "chain.blocks"
SPILLS = "SELECT count(DISTINCT (a.block_number, b.block_number, a.miner)) FROM dataset a, dataset b"
# One call to regexp_replace on a 100 MB string runs ~15 s and never looks at DuckDB's
# interrupt: only killing the process stops it.
IGNORES_INTERRUPT = (
    "SELECT length(regexp_replace(repeat('ab', 50000000), 'a', 'cc', 'g')) FROM dataset WHERE block_number = 0"
)


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kb) * 1024


class PeakRss:
    """The highest RSS seen, every 20 ms, of the service process and of each query process."""

    def __init__(self, workers: QueryWorkers) -> None:
        self._workers = workers
        self.service = 0
        self.worker = 0

    async def _sample(self) -> None:
        while True:
            self.service = max(self.service, _rss(os.getpid()))
            self.worker = max([self.worker, *(_rss(pid) for pid in self._workers.pids())])
            await asyncio.sleep(0.02)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[PeakRss]:
        task = asyncio.create_task(self._sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.fixture
def store(settings: Settings) -> LocalObjectStore:
    """The platform's local object store (as ``local_store`` in tests/integration)."""
    (settings.data_dir / "objects").mkdir(parents=True, exist_ok=True)
    return LocalObjectStore([settings.data_dir / "objects"])


@pytest.fixture
def uri(settings: Settings) -> str:
    return f"file://{settings.data_dir / 'objects'}"


@dataclass
class Served:
    """A platform of the test's own, its 3,000-block dataset published as ``chain.blocks``,
    and a user's client on a channel that takes messages up to the server's cap."""

    running: RunningPlatform
    user: ApiQueryClient

    @property
    def workers(self) -> QueryWorkers:
        return self.running.query.workers

    async def query(self, sql: str, limit: int = 0) -> QueryRows:
        return await self.user.query(DATASET, sql, limit=limit)


@contextlib.asynccontextmanager
async def served(settings: Settings, store: LocalObjectStore, uri: str, **query: object) -> AsyncIterator[Served]:
    async with own_platform(settings, store, uri, **query) as own:
        await DatasetRepository(own.running.pool).publish(ORG, DATASET, own.dataset.publication)
        options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        async with grpc.aio.insecure_channel(own.running.addr, options=options) as ch:
            yield Served(own.running, await user_client(ch, settings))


async def test_string_and_list_builders_are_refused_and_memory_stays_bounded(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
) -> None:
    async with served(settings, store, uri, memory_limit=MEMORY_LIMIT, user_timeout_seconds=5.0) as own:
        workers = own.workers
        cap = workers.address_space()
        # The cap: what a process has mapped once ready, the memory limit and the headroom.
        assert cap < size_bytes(MEMORY_LIMIT) + size_bytes(settings.query.process_headroom) + (1536 << 20)
        service_before = _rss(os.getpid())
        outcomes = {}
        async with PeakRss(workers).watching() as peak:
            for name, sql in BUILDERS.items():
                try:
                    await own.query(sql)
                    outcomes[name] = "answered"
                except TraceError as exc:
                    outcomes[name] = f"{type(exc).__name__}:{exc.reason}"
        refused = {"ResourceExhausted:QUERY_MEMORY_LIMIT", "DeadlineExceeded:QUERY_TIMEOUT"}
        assert {name: outcome for name, outcome in outcomes.items() if outcome not in refused} == {}
        assert outcomes["repeat"] == outcomes["unnest"] == outcomes["format"] == "ResourceExhausted:QUERY_MEMORY_LIMIT"
        assert peak.worker <= cap
        assert peak.service - service_before < 100 << 20  # nothing of it reached the service
        ok = await own.query("SELECT count(*) FROM dataset")  # and it keeps serving
        assert ok.rows == [[3_000]]


async def test_a_query_past_its_deadline_is_killed_and_its_slot_is_free_at_once(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
    db: asyncpg.Connection,
) -> None:
    timeout = 1.0
    capped = {"slots": 2, "admission_queue": 0, "user_timeout_seconds": timeout}
    async with served(settings, store, uri, **capped) as own:
        workers = own.workers
        before = set(workers.pids())
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = [asyncio.create_task(own.query(IGNORES_INTERRUPT)) for _ in range(2)]

        async def both_running() -> bool:
            running: int = await db.fetchval("SELECT count(*) FROM query_audit WHERE outcome = 'running'")
            return running == 2

        await eventually(both_running, timeout=timeout)
        with pytest.raises(ResourceExhausted) as full:  # every slot is taken
            await own.query("SELECT 1 FROM dataset LIMIT 1")
        assert full.value.reason == "QUERY_CAPACITY"
        for task in slow:
            with pytest.raises(DeadlineExceeded) as exc:
                await task
            assert exc.value.reason == "QUERY_TIMEOUT"
        assert loop.time() - started < timeout + 2.0
        # Another user's query runs at once: the slots were freed by the kills.
        asked = loop.time()
        ok = await own.query("SELECT count(*) FROM dataset")
        assert ok.rows == [[3_000]]
        assert loop.time() - asked < 1.0
        assert before - set(workers.pids()), "the processes that ran them were killed"


async def test_an_answer_too_large_for_a_message_is_cut_at_the_cap(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
) -> None:
    async with served(settings, store, uri) as own:
        workers = own.workers
        fits = await own.query(f"SELECT repeat('x', {MAX_ANSWER_BYTES // 2000}) AS x FROM dataset", limit=1000)
        assert len(fits.rows) == 1000  # ~half the cap: answered whole
        service_before = _rss(os.getpid())
        async with PeakRss(workers).watching() as peak:
            with pytest.raises(ResourceExhausted) as exc:  # 1,000 rows of 100 kB: 6x the cap
                await own.query("SELECT repeat('x', 100000) AS x FROM dataset", limit=1000)
        assert exc.value.reason == "QUERY_RESULT_TOO_LARGE"
        assert peak.service - service_before < 64 << 20  # the service never held the answer
        assert peak.worker <= workers.address_space()


async def test_a_record_batch_too_large_for_a_message_is_split(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
) -> None:
    async with served(settings, store, uri) as own:
        # One DuckDB batch of 3,000 rows of 20 kB: ~4x a message, so several messages.
        sql = "SELECT repeat('x', 20000) AS x FROM dataset"
        batches = [b async for b in own.user.query_arrow_batches(DATASET, sql)]
        assert sum(b.num_rows for b in batches) == 3_000
        assert len(batches) >= 4


async def test_spill_stops_at_its_bound(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
) -> None:
    tuned = {"memory_limit": MEMORY_LIMIT, "temp_limit": "64MB", "user_timeout_seconds": 60.0}
    async with served(settings, store, uri, **tuned) as own:
        work = settings.data_dir / "query-work"
        seen = 0

        async def spill_sampler() -> None:
            nonlocal seen
            while True:
                seen = max(seen, await asyncio.to_thread(_tree_bytes, work))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(spill_sampler())
        try:
            with pytest.raises(ResourceExhausted) as exc:  # ~700 MB of groups under 256 MB
                await own.query(SPILLS)
        finally:
            sampler.cancel()
        assert exc.value.reason == "QUERY_SPILL_LIMIT"
        assert 0 < seen <= (64 << 20) + (16 << 20)


def _tree_bytes(root: Path) -> int:
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(directory, name)).st_size
    return total


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def _copy_in_process(pinned: PinnedFiles, work: Path) -> bool:
    """COPY over the version's object on a hardened database in this process: whether the
    bytes changed (DuckDB alone lets a pinned database write its allowed directories)."""
    part = Path(pinned.paths[0])
    before = part.read_bytes()
    db = HardenedDatabase(work, DuckDBLimits("256MB", 1), pinned)
    try:
        db.connect().execute(f"COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet)")
    finally:
        db.close()
    return part.read_bytes() != before


async def _pinned(store: LocalObjectStore, uri: str) -> PinnedFiles:
    version = write_dataset(store, uri, [blocks_table(10)])
    attached = await DatasetAttacher(ObjectStores([store])).attach(
        version.dataset_uuid, version.dataset_version, version.storage_ref, None
    )
    assert attached.pinned is not None
    return attached.pinned


async def test_a_version_is_read_only_to_the_query_process_even_without_the_gate(
    settings: Settings,
    store: LocalObjectStore,
    uri: str,
    tmp_path: Path,
) -> None:
    assert await asyncio.to_thread(_copy_in_process, await _pinned(store, uri), tmp_path / "control")
    pinned = await _pinned(store, uri)
    directory, part = Path(pinned.directories[0]), pinned.paths[0]
    before = await asyncio.to_thread(_snapshot, directory)
    hostile = [
        f"COPY (SELECT 1 AS x) TO '{part}' (FORMAT parquet)",  # overwrite the version's object
        f"COPY (SELECT 1 AS x) TO '{directory}/extra.parquet' (FORMAT parquet)",  # add one
        f"COPY (SELECT 1 AS x) TO '{directory}/_manifest.json' (FORMAT csv)",
    ]
    # The query process: the executor layer itself, no gate in front.
    workers = QueryWorkers(settings.data_dir / "query-work", settings.query, [settings.data_dir])
    await workers.start()
    try:
        for sql in hostile:
            with pytest.raises(TraceError):
                await workers.rows((), pinned, sql, 10, 10.0)
        read = await workers.rows((), pinned, "SELECT count(*) FROM dataset", 10, 10.0)
        assert read.rows[0].values[0].int_value == 10
    finally:
        await workers.close()
    assert await asyncio.to_thread(_snapshot, directory) == before
