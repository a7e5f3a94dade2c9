"""Composition of the DagService from the process's pool and settings."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup, PostgresBundleLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.adapters.postgres.wakeups import PostgresWakeups
from trace_platform.core.config import Settings
from trace_platform.servers.api.dags.lookups import BundleLookup
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.dags.servicer import DagServicer, dag_binding
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.chain_sync.app import PLANNER_WAKEUP
from trace_platform.servers.common.server import ServiceBinding


def build_dag_service(
    pool: asyncpg.Pool,
    settings: Settings,
    bundles: BundleLookup | None = None,
    wake_planner: Callable[[], None] = lambda: None,
) -> DagService:
    return DagService(
        DagRepository(pool),
        bundles or PostgresBundleLookup(pool),
        PostgresAlertLookup(pool),
        frozenset(settings.rpc_pools),
        wake_planner,
    )


def build_dag_binding(pool: asyncpg.Pool, settings: Settings, auth: UserAuthenticator) -> ServiceBinding:
    # An activation's chain_sync jobs plan at once: the planner runs in the dispatcher role,
    # maybe in another process, and hears the wake-up through NOTIFY.
    wake = PostgresWakeups(pool).signal(PLANNER_WAKEUP)
    return dag_binding(DagServicer(build_dag_service(pool, settings, wake_planner=wake), auth))
