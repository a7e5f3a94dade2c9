"""Composition of the BundleService from the process's pool and settings."""

from __future__ import annotations

import asyncpg

from trace_platform.adapters.objectstore.bundle_objects import BundleObjects, bundle_objects, bundles_uri
from trace_platform.adapters.postgres.bundle_repository import BundleRepository
from trace_platform.core.bundle_manifest import TrustedKeys
from trace_platform.core.config import Settings
from trace_platform.servers.api.bundles.service import BundleService
from trace_platform.servers.api.bundles.servicer import BundleServicer, bundle_binding
from trace_platform.servers.api.identity import UserAuthenticator
from trace_platform.servers.common.server import ServiceBinding


def trusted_bundle_keys(settings: Settings) -> TrustedKeys:
    """The same keys the invoker trusts: Finalize refuses what a run would refuse."""
    return TrustedKeys.from_dir(settings.invoker.trusted_keys_dir or settings.data_dir / "bundle_keys")


def build_bundle_service(pool: asyncpg.Pool, settings: Settings, objects: BundleObjects | None = None) -> BundleService:
    return BundleService(
        BundleRepository(pool),
        objects or bundle_objects(settings),
        bundles_uri(settings),
        trusted_bundle_keys(settings),
        settings.bundles,
    )


def build_bundle_binding(pool: asyncpg.Pool, settings: Settings, auth: UserAuthenticator) -> ServiceBinding:
    return bundle_binding(BundleServicer(build_bundle_service(pool, settings), auth))
