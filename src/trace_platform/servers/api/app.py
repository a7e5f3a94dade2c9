"""Composition of the user API: every public service, each given the same authenticator
and built from the process's pool, settings and stores."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.core.config import Settings
from trace_platform.servers.api.alerts.app import build_alert_binding
from trace_platform.servers.api.bundles.app import build_bundle_binding
from trace_platform.servers.api.dags.app import build_dag_binding
from trace_platform.servers.api.datasets.app import build_dataset_binding
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding


@dataclass(frozen=True)
class ApiDeps:
    pool: asyncpg.Pool
    settings: Settings
    authenticator: UserAuthenticator
    stores: ObjectStores  # dataset objects (schemas of datasets, bundle artifacts)
    registry: CollectorRegistry


def build_api_bindings(deps: ApiDeps) -> list[ServiceBinding]:
    bindings: list[ServiceBinding] = []
    bindings.append(build_bundle_binding(deps.pool, deps.settings, deps.authenticator))
    bindings.append(build_dataset_binding(deps.pool, deps.stores, deps.authenticator))
    bindings.append(build_alert_binding(deps.pool, deps.settings, deps.authenticator))
    bindings.append(build_dag_binding(deps.pool, deps.settings, deps.authenticator))
    return bindings
