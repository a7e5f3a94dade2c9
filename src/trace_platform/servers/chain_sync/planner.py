"""The range planner and the head observer: Dispatcher background loops.

The planner tops up each enabled stream's in-flight window (core.planner decides, the
repository records ranges, tasks, wake-ups and the cursor in one transaction). The head
observer polls ``eth_blockNumber`` per (org, chain, rpc pool) and records what it saw;
it records nothing when the pool's node reports another chain, so follow_head plans
nothing on a misconfigured pool (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping

from trace_platform.adapters.postgres.chain_sync_repository import (
    ChainSyncRepository,
    HeadTarget,
    ScheduledRange,
    StreamState,
)
from trace_platform.adapters.rpc.jsonrpc import RpcError, json_rpc
from trace_platform.adapters.rpc.pool_proxy import PoolUrls
from trace_platform.core.cryo_task import task_config
from trace_platform.core.planner import BlockRange, Plan, plan_stream
from trace_platform.core.rpc_pools import RpcPool
from trace_platform.servers.chain_sync.metrics import ChainSyncMetrics

log = logging.getLogger(__name__)
STREAMS_PER_STEP = 500


def plan_ranges(state: StreamState, now: float) -> tuple[Plan, list[ScheduledRange]]:
    stream = state.spec.stream(state.dataset_key)
    plan = plan_stream(
        cursor=state.cursor,
        in_flight=state.in_flight,
        chunk_size=stream.chunk_size,
        max_inflight=stream.max_inflight,
        mode=state.spec.mode,
        head=state.head,
        now=now,
    )
    ranges = [
        ScheduledRange(
            r.start,
            r.end,
            str(uuid.uuid4()),
            task_config(
                state.spec, state.group or ((state.dataset_key, state.dataset_uuid),), BlockRange(r.start, r.end)
            ).to_dict(),
        )
        for r in plan.ranges
    ]
    return plan, ranges


class RangePlanner:
    def __init__(
        self, repo: ChainSyncRepository, max_attempts: int, on_scheduled: Callable[[], None], metrics: ChainSyncMetrics
    ) -> None:
        self._repo = repo
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._on_scheduled = on_scheduled

    async def step(self) -> int:
        scheduled = 0
        for job_id, key in await self._repo.plannable_streams(STREAMS_PER_STEP):
            scheduled += await self._repo.plan_stream(
                job_id, key, lambda state: plan_ranges(state, time.time()), self._max_attempts
            )
        if scheduled:
            self._metrics.ranges_planned.inc(scheduled)
            self._on_scheduled()
        for name in await self._repo.complete_finished_jobs():
            log.info("chain_sync job complete", extra={"job": name})
        return 0  # one pass per interval: a full window waits for completions anyway


CHAIN_ID_RECHECK_SECONDS = 60.0


class HeadObserver:
    def __init__(
        self,
        repo: ChainSyncRepository,
        rpc_pools: Mapping[str, str | RpcPool],
        metrics: ChainSyncMetrics,
        timeout: float = 5.0,
        on_advance: Callable[[], None] | None = None,
    ) -> None:
        self._repo = repo
        self._observations = metrics.head_observations
        self._pools = PoolUrls(rpc_pools)  # a pool with limits: via the pool proxy
        self._timeout = timeout
        self._warned: set[str] = set()
        # Wakes the planner when a head moved: a new block is planned at once, not at the
        # planner's next poll (a hint: the planner reads the head from PostgreSQL).
        self._on_advance = on_advance
        self._heads: dict[tuple[str, int, str], int] = {}
        self._shortest_poll = float("inf")
        self._chain_ids: dict[str, tuple[int, float]] = {}  # pool -> (chain id, monotonic time asked)

    async def _chain_id(self, pool: str, url: str) -> int:
        """The pool's chain id, asked again at most every CHAIN_ID_RECHECK_SECONDS (and after
        any error): a fast poll then costs one request per observation, not two. Cryo's
        runner checks the chain id of every extraction itself, so a node swapped for
        another chain in between never gets its blocks published."""
        now = time.monotonic()
        known = self._chain_ids.get(pool)
        if known is not None and now - known[1] < CHAIN_ID_RECHECK_SECONDS:
            return known[0]
        chain_id = int(str(await asyncio.to_thread(json_rpc, url, "eth_chainId", None, self._timeout)), 16)
        self._chain_ids[pool] = (chain_id, now)
        return chain_id

    def next_wait(self, interval: float) -> float:
        """The observer loop's wait: its interval, or less when a job polls faster."""
        return min(interval, self._shortest_poll)

    async def step(self) -> int:
        now = time.time()
        targets = await self._repo.head_targets()
        self._shortest_poll = min((t.poll_seconds for t in targets), default=float("inf"))
        due = [t for t in targets if now - t.observed_at >= t.poll_seconds * 0.9]
        results = await asyncio.gather(*(self._observe(t) for t in due), return_exceptions=True)
        if self._on_advance is not None and any(r == "advanced" for r in results):
            self._on_advance()
        return sum(1 for r in results if r in ("advanced", True))

    async def _observe(self, target: HeadTarget) -> bool | str:
        """False: nothing recorded; True: the head recorded; "advanced": it moved on."""
        url = self._pools.get(target.rpc_pool)
        if not url:
            self._warn(target.rpc_pool, "no URL configured for rpc pool", "no_url")
            return False
        try:
            chain_id = await self._chain_id(target.rpc_pool, url)
            head = int(str(await asyncio.to_thread(json_rpc, url, "eth_blockNumber", None, self._timeout)), 16)
        except (RpcError, ValueError):
            self._chain_ids.pop(target.rpc_pool, None)  # the endpoint may come back as another node
            self._warn(target.rpc_pool, "rpc pool unreachable", "unreachable")
            return False
        if chain_id != target.chain_id:
            self._chain_ids.pop(target.rpc_pool, None)
            self._warn(target.rpc_pool, "rpc pool serves another chain", "wrong_chain")
            return False
        self._warned.discard(target.rpc_pool)
        self._observations.labels("ok").inc()
        await self._repo.record_head(target, head)
        key = (target.org_id, target.chain_id, target.rpc_pool)
        previous, self._heads[key] = self._heads.get(key), head
        return "advanced" if previous is None or head > previous else True

    def _warn(self, pool: str, message: str, outcome: str) -> None:
        self._observations.labels(outcome).inc()
        if pool not in self._warned:  # once per outage, and never the URL (it may hold a key)
            log.warning(message, extra={"rpc_pool": pool})
            self._warned.add(pool)
