"""Composition of the DatasetService from the api role's dependencies."""

from __future__ import annotations

import asyncpg

from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.postgres.dataset_registry_repository import DatasetRegistryRepository
from trace_platform.servers.api.datasets.service import DatasetService
from trace_platform.servers.api.datasets.servicer import DatasetServicer, dataset_binding
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding


def build_dataset_binding(pool: asyncpg.Pool, stores: ObjectStores, auth: UserAuthenticator) -> ServiceBinding:
    return dataset_binding(DatasetServicer(DatasetService(DatasetRegistryRepository(pool), stores), auth))
