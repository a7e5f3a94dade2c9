"""Composition of the RuntimeInvoker: the configured invoker behind the gRPC servicer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from trace_platform.adapters.invoker.base import RuntimeInvoker
from trace_platform.core.bundle_manifest import TrustedKeys
from trace_platform.core.config import Settings
from trace_platform.core.errors import InvalidArgument
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.invoker.metrics import InvokerMetrics, MeteredInvoker
from trace_platform.servers.invoker.servicer import InvokerServicer, invoker_binding

if TYPE_CHECKING:
    from trace_platform.adapters.invoker.local import RemoteBundles


def default_bundle_roots(settings: Settings) -> tuple[Path, ...]:
    from trace_platform.adapters.objectstore.bundle_objects import bundles_uri

    uri = bundles_uri(settings)
    return (Path(uri.removeprefix("file://")),) if uri.startswith("file://") else (settings.data_dir / "bundles",)


def build_runtime_invoker(settings: Settings) -> RuntimeInvoker:
    inv = settings.invoker
    if inv.backend == "lambda":
        from trace_platform.adapters.invoker.lambda_ import LambdaInvoker

        return LambdaInvoker.from_settings(settings)
    if inv.backend != "local":
        raise InvalidArgument("INVALID_INVOKER_BACKEND", "invoker backend must be local or lambda")
    from trace_platform.adapters.invoker.local import LocalInvoker

    trusted = TrustedKeys.from_dir(inv.trusted_keys_dir or settings.data_dir / "bundle_keys")
    # Default: where the BundleService publishes (<data dir>/bundles unless TRACE_BUNDLES_URI).
    roots = inv.bundle_roots or default_bundle_roots(settings)
    tls = settings.tls
    task_tls = None
    if tls.dials_tls:
        from trace_platform.adapters.invoker.bridge import task_endpoint_tls

        task_tls = task_endpoint_tls(tls.ca_file, tls.client_cert_file, tls.client_key_file)
    return LocalInvoker(
        inv,
        trusted,
        bundle_roots=roots,
        runs_dir=inv.runs_dir,
        task_tls=task_tls,
        remote_bundles=remote_bundles(settings),
    )


def remote_bundles(settings: Settings) -> RemoteBundles | None:
    """The bundle store when it is S3: the invoker reads published bundles from it (in
    the cluster profile it shares no directory with the BundleService)."""
    from trace_platform.adapters.objectstore.bundle_objects import S3BundleObjects, bundles_uri

    uri = bundles_uri(settings)
    if not uri.startswith("s3://"):
        return None
    from trace_platform.adapters.invoker.local import RemoteBundles

    return RemoteBundles(uri + "/", S3BundleObjects(settings.object_store))


def metered_runtime_invoker(settings: Settings, registry: CollectorRegistry) -> RuntimeInvoker:
    """The configured invoker with its runs counted on ``registry`` (a worker process's own)."""
    invoker = build_runtime_invoker(settings)
    return MeteredInvoker(invoker, InvokerMetrics(registry), cold_every_run=settings.invoker.backend == "local")


@dataclass
class RuntimeInvokerApp:
    invoker: RuntimeInvoker  # the configured backend
    binding: ServiceBinding
    metered: RuntimeInvoker  # the backend with its runs counted: what callers use

    async def close(self) -> None:
        await self.invoker.close()


def build_invoker_app(
    settings: Settings, invoker: RuntimeInvoker | None = None, registry: CollectorRegistry | None = None
) -> RuntimeInvokerApp:
    invoker = invoker or build_runtime_invoker(settings)
    metrics = InvokerMetrics(registry or CollectorRegistry())
    metered = MeteredInvoker(invoker, metrics, cold_every_run=settings.invoker.backend == "local")
    return RuntimeInvokerApp(invoker, invoker_binding(InvokerServicer(metered, settings.worker_token)), metered)
