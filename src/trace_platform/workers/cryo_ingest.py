"""The cryo_ingest operator: one range of one stream, extracted by Cryo and published.

Cryo writes into a private per-task-and-attempt staging directory; the Parquet files
(names keep Cryo's ``{start}_to_{end}``) are uploaded under the version-addressed
prefix ``datasets/{dataset_uuid}/{dataset_version}/`` with the manifest written last,
the staging directory is removed, and the task completes with exactly one dataset
publication per stream it extracts (several streams of one range share one Cryo call).
Versions are derived from the range and config, so a retried attempt rewrites the same
objects and publishes the same versions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

from trace_platform.adapters.extract.cryo_runner import CryoRequest, CryoRunner, StagedFile, remove_stale_staging
from trace_platform.adapters.objectstore.stores import ObjectStores
from trace_platform.adapters.rpc.pool_proxy import cryo_concurrency, pool_url
from trace_platform.core.cryo_task import CryoOutput, CryoTaskConfig
from trace_platform.core.errors import FailedPrecondition
from trace_platform.core.manifest import MANIFEST_NAME, build_manifest, object_prefix
from trace_platform.core.rpc_pools import RpcPool, pool_of
from trace_platform.gen.trace.v1 import common_pb2
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

log = logging.getLogger(__name__)
STALE_STAGING_SECONDS = 6 * 3600


def storage_ref_for(prefix_uri: str) -> common_pb2.StorageRef:
    if prefix_uri.startswith("s3://"):
        bucket, _, key = prefix_uri[len("s3://") :].partition("/")
        return common_pb2.StorageRef(scheme="s3", bucket=bucket, prefix=key, glob="*.parquet")
    return common_pb2.StorageRef(scheme="file", prefix=prefix_uri[len("file://") :], glob="*.parquet")


def cryo_ingest_operator(
    staging_root: Path, rpc_pools: Mapping[str, str | RpcPool], stores: ObjectStores, datasets_uri: str
) -> Operator:
    pools = {name: pool_of(name, v) for name, v in rpc_pools.items()}
    runner = CryoRunner(staging_root)
    removed = remove_stale_staging(staging_root, STALE_STAGING_SECONDS) if staging_root.exists() else []
    if removed:
        log.info("removed stale cryo staging directories", extra={"count": len(removed)})

    async def cryo_ingest(ctx: OperatorContext) -> OperatorResult:
        config = CryoTaskConfig.from_dict(ctx.config)
        pool = pools.get(config.rpc_pool)
        if pool is None:
            raise FailedPrecondition("RPC_POOL_UNKNOWN", "no URL configured for the rpc pool", category="config")
        # A pool of several endpoints or with limits: Cryo talks to the process's pool proxy
        # (it spreads, limits, backs off and fails over; Cryo never sees the real URLs).
        url = pool_url(pool)
        names = [o.cryo_dataset_name for o in config.outputs]
        staged = await runner.run(
            CryoRequest(
                task_id=ctx.ref.task_id,
                attempt=ctx.ref.attempt,
                cryo_dataset_name=names[0],
                block_range=config.block_range,
                rpc_url=url,
                chain_id=config.chain_id,
                more_datasets=tuple(names[1:]),
                max_concurrent_requests=cryo_concurrency(pool),
            )
        )
        publications = []
        try:
            for out in config.outputs:
                prefix_uri = f"{datasets_uri}/{object_prefix(out.dataset_uuid, out.dataset_version)}"
                files = StagedFile.of(staged.files, out.cryo_dataset_name)
                await asyncio.to_thread(_upload, files, stores, prefix_uri, out)
                publications.append(
                    common_pb2.DatasetPublication(
                        dataset_uuid=out.dataset_uuid,
                        dataset_version=out.dataset_version,
                        storage_ref=storage_ref_for(prefix_uri),
                        config_hash=out.config_hash,
                        range_start=config.range_start,
                        range_end=config.range_end,
                    )
                )
        finally:
            staged.cleanup()
        return OperatorResult(datasets_published=publications)

    return cryo_ingest


def _upload(files: list[StagedFile], stores: ObjectStores, prefix_uri: str, out: CryoOutput) -> None:
    store = stores.for_uri(prefix_uri)
    for f in files:
        store.put_bytes(prefix_uri + f.object.key, f.path.read_bytes())
    manifest = build_manifest(out.dataset_uuid, out.dataset_version, [f.object for f in files])
    store.put_bytes(prefix_uri + MANIFEST_NAME, manifest.to_json())  # last: readers see whole versions
