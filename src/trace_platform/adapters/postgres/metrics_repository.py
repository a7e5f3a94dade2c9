"""Read-only snapshots behind the Dispatcher's and chain_sync's gauges (sql/metrics.sql).

Each snapshot is one statement; callers cache it (servers/common/metrics.LoopSnapshot),
so a burst of scrapes costs one query."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from trace_platform.adapters.postgres import queries


@dataclass(frozen=True)
class Backlog:
    count: int
    oldest_seconds: float


@dataclass(frozen=True)
class DispatcherSnapshot:
    tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (state, operator) -> count
    oldest_queued: dict[str, float] = field(default_factory=dict)  # operator -> seconds
    queues: dict[str, Backlog] = field(default_factory=dict)
    outbox: Backlog = Backlog(0, 0.0)


@dataclass(frozen=True)
class StreamSnapshot:
    org: str
    job: str
    stream: str
    cursor: int
    synced_to: int
    head_block: int | None
    target: int | None
    in_flight: int
    failed: int
    oldest_in_flight_seconds: float


class MetricsRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._sql = queries.load("metrics")

    async def dispatcher_snapshot(self) -> DispatcherSnapshot:
        snap = DispatcherSnapshot()
        for r in await self._pool.fetch(self._sql["dispatcher_snapshot"]):
            kind, a, b, n, age = r["kind"], r["a"], r["b"], int(r["n"]), float(r["age_seconds"])
            if kind == "tasks":
                snap.tasks[(a, b)] = n
                if a == "queued":
                    snap.oldest_queued[b] = age
            elif kind == "queue":
                snap.queues[a] = Backlog(n, age)
            else:
                snap = DispatcherSnapshot(snap.tasks, snap.oldest_queued, snap.queues, Backlog(n, age))
        return snap

    async def chain_sync_snapshot(self) -> list[StreamSnapshot]:
        return [
            StreamSnapshot(
                org=r["org"],
                job=r["job"],
                stream=r["stream"],
                cursor=int(r["cursor"]),
                synced_to=int(r["synced_to"]),
                head_block=None if r["head_block"] is None else int(r["head_block"]),
                target=None if r["target"] is None else int(r["target"]),
                in_flight=int(r["in_flight"]),
                failed=int(r["failed"]),
                oldest_in_flight_seconds=float(r["oldest_in_flight_seconds"]),
            )
            for r in await self._pool.fetch(self._sql["chain_sync_snapshot"])
        ]
