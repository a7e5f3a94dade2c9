"""Composition of the Query Service: stores, hardened databases, verifiers, metrics, and
its two bindings (internal TaskQuery, public Query and QueryArrow)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.factory import object_stores
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.core.config import Settings
from trace_platform.core.tokens import JwksFetcher, TokenVerifier
from trace_platform.servers.api.identity import build_user_authenticator
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.query.attach import DatasetAttacher
from trace_platform.servers.query.egress import check_query_egress
from trace_platform.servers.query.metrics import QueryMetrics
from trace_platform.servers.query.service import QueryService
from trace_platform.servers.query.servicer import ApiQueryServicer, QueryServicer, api_query_binding, query_binding
from trace_platform.servers.query.workers import QueryWorkers


@dataclass
class QueryServer:
    service: QueryService
    binding: ServiceBinding  # trace.v1.QueryService (TaskQuery)
    workers: QueryWorkers
    api_binding: ServiceBinding  # trace.api.v1.QueryService (Query, QueryArrow)

    @property
    def bindings(self) -> list[ServiceBinding]:
        return [self.binding, self.api_binding]

    async def start(self) -> None:
        await self.workers.start()

    async def stop(self) -> None:
        await self.service.audit.drain(timeout=5.0)
        with contextlib.suppress(Exception):
            await self.workers.close()


def build_query_server(
    pool: asyncpg.Pool,
    settings: Settings,
    fetch_jwks: JwksFetcher,
    stores: ObjectStores | None = None,
    registry: CollectorRegistry | None = None,
) -> QueryServer:
    check_query_egress(settings)  # before anything is built: a refused start opens nothing here
    q = settings.query
    tok = settings.tokens
    task_verifier = TokenVerifier(
        tok.issuer,
        fetch_jwks=fetch_jwks,
        dev_hs256_secret=tok.dev_hs256_secret,
        refresh_min_seconds=tok.jwks_refresh_min_seconds,
        cache_seconds=tok.jwks_cache_seconds,
        max_lifetime_seconds=tok.ttl_seconds,
    )
    # The query processes see the data directory and every file root read-only.
    workers = QueryWorkers(settings.data_dir / "query-work", q, [settings.data_dir, *q.file_roots])
    service = QueryService(
        DatasetRepository(pool),
        DatasetAttacher(stores or object_stores(settings)),
        workers,
        task_verifier,
        q,
        QueryMetrics(registry or CollectorRegistry()),
    )
    authenticator = build_user_authenticator(pool, settings.user_auth)
    api = api_query_binding(ApiQueryServicer(service, authenticator))
    return QueryServer(service, query_binding(QueryServicer(service)), workers, api)
