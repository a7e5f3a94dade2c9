"""Composition of chain_sync in the Dispatcher process: admin servicer, planner, head observer."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.factory import datasets_uri, object_stores
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.adapters.postgres.compaction_repository import CompactionRepository
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.adapters.postgres.metrics_repository import MetricsRepository
from trace_platform.adapters.postgres.reorg_repository import ReorgRepository
from trace_platform.adapters.rpc.pool_proxy import PoolUrls
from trace_platform.core.config import Settings
from trace_platform.servers.chain_sync.compaction import CompactionPlanner, RetiredCollector
from trace_platform.servers.chain_sync.metrics import ChainSyncMetrics
from trace_platform.servers.chain_sync.planner import HeadObserver, RangePlanner
from trace_platform.servers.chain_sync.reorg import ReorgWatcher
from trace_platform.servers.chain_sync.servicer import ChainSyncServicer, chain_sync_binding
from trace_platform.servers.chain_sync.verify import ChainVerifier, VerifyScheduler
from trace_platform.servers.common.loop import Loop, Wakeups
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.query.attach import DatasetAttacher

# The wake-up a completion that published datasets sends the planner.
PLANNER_WAKEUP = "chain_sync_planner"


def build_chain_sync(
    pool: asyncpg.Pool,
    settings: Settings,
    wake_outbox: Callable[[], None],
    registry: CollectorRegistry | None = None,
    wakeups: Wakeups | None = None,
    stores: ObjectStores | None = None,
) -> tuple[ServiceBinding, list[Loop]]:
    """The ChainSync service and its loops. With ``wakeups`` the planner is woken by name
    (NOTIFY: an Apply or a completion in another process wakes it); without, in process."""
    repo = ChainSyncRepository(pool)
    metrics = ChainSyncMetrics(registry or CollectorRegistry(), MetricsRepository(pool).chain_sync_snapshot)
    d = settings.dispatcher
    planner = RangePlanner(repo, d.default_max_attempts, wake_outbox, metrics)
    wait = wakeups.waiter(PLANNER_WAKEUP) if wakeups is not None else None
    planner_loop = Loop("chain_sync_planner", planner.step, d.planner_interval_seconds, 1, wait=wait)
    wake_planner = wakeups.signal(PLANNER_WAKEUP) if wakeups is not None else planner_loop.wakeup.set
    observer = HeadObserver(repo, settings.rpc_pools, metrics, on_advance=wake_planner)
    # VerifyChainSync reads published versions as the Query Service does (same attacher).
    stores = stores or object_stores(settings)
    verifier = ChainVerifier(repo, DatasetRepository(pool), DatasetAttacher(stores), settings.rpc_pools)
    reorgs = ReorgRepository(pool)
    # Its own attacher: the detector reads each new version once (nothing to cache), and a
    # manifest it checked must not stand in for a later verify call's own check.
    watcher = ReorgWatcher(
        reorgs,
        verifier,
        DatasetAttacher(stores, cache_size=1),
        PoolUrls(settings.rpc_pools),
        d.default_max_attempts,
        wake_outbox,
        metrics=metrics,
    )
    observer_loop = Loop(
        "chain_head_observer",
        observer.step,
        d.head_observer_interval_seconds,
        1_000_000,
        interval_of=observer.next_wait,  # a job polling faster than the interval sets the pace
    )

    def wake_after_apply() -> None:
        # A new job's pool may have no head observation yet, and fixed_target plans nothing
        # before one: observe now instead of up to an interval later (the observer and this
        # servicer always share the process).
        wake_planner()
        observer_loop.wakeup.set()

    loops = [
        planner_loop,
        observer_loop,
        # Due checks are looked for as often as heads are observed; each job's own
        # verify.every_seconds decides when it runs.
        Loop("chain_sync_verify", VerifyScheduler(repo, verifier).step, d.head_observer_interval_seconds, 10),
        # Continuity with the node is checked as often as heads are observed (every pass
        # compares the published tip with the node's block at its number).
        Loop("chain_sync_reorg", watcher.step, d.head_observer_interval_seconds, 1_000_000),
        *compaction_loops(pool, settings, stores, wake_outbox),
    ]
    servicer = ChainSyncServicer(
        repo, settings.admin_token, frozenset(settings.rpc_pools), wake_after_apply, wake_outbox, verifier, reorgs
    )
    return chain_sync_binding(servicer), loops


# Compaction is background work: looked for every COMPACTION_PASSES head-observer intervals.
COMPACTION_PASSES = 10
# A retired version's objects outlive the longest query that could have pinned it.
COLLECT_MARGIN_SECONDS = 60.0


def compaction_loops(
    pool: asyncpg.Pool, settings: Settings, stores: ObjectStores, wake_outbox: Callable[[], None]
) -> list[Loop]:
    repo = CompactionRepository(pool)
    d = settings.dispatcher
    every = d.head_observer_interval_seconds * COMPACTION_PASSES
    grace = max(settings.query.user_timeout_seconds, settings.query.task_timeout_seconds) + COLLECT_MARGIN_SECONDS
    return [
        Loop("chain_sync_compaction", CompactionPlanner(repo, d.default_max_attempts, wake_outbox).step, every, 1_000),
        Loop("chain_sync_collect", RetiredCollector(repo, stores, datasets_uri(settings), grace).step, every, 200),
    ]
