"""gRPC handlers for chain_sync administration (admin token)."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from typing import Any

from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.adapters.postgres.reorg_repository import ReorgRepository
from trace_platform.adapters.rpc.pool_proxy import status_by_name
from trace_platform.core.chain_sync import check_rpc_pools, parse_chain_sync, registry_name
from trace_platform.core.chain_verify import MAX_DIFFERENCES_SHOWN
from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.validation import require_uuid
from trace_platform.gen.trace.v1 import chain_sync_pb2, chain_sync_pb2_grpc
from trace_platform.servers.chain_sync.verify import ChainVerifier
from trace_platform.servers.common.auth import ADMIN_TOKEN, require_shared_secret
from trace_platform.servers.common.server import ServiceBinding

Ctx = Any  # grpc.aio.ServicerContext (grpc ships no type hints)
pb = chain_sync_pb2
MAX_YAML_BYTES = 64 * 1024
_OUTCOMES = {
    "created": pb.APPLY_OUTCOME_CREATED,
    "updated": pb.APPLY_OUTCOME_UPDATED,
    "unchanged": pb.APPLY_OUTCOME_UNCHANGED,
}


def _name(value: str) -> str:
    if not value or len(value) > 64:
        raise InvalidArgument("INVALID_NAME", "name is required", field="name")
    return value


class ChainSyncServicer(chain_sync_pb2_grpc.ChainSyncServiceServicer):
    def __init__(
        self,
        repo: ChainSyncRepository,
        admin_token: str | None,
        rpc_pools: Collection[str],
        wake_planner: Callable[[], None] = lambda: None,
        wake_outbox: Callable[[], None] = lambda: None,
        verifier: ChainVerifier | None = None,
        reorgs: ReorgRepository | None = None,
    ) -> None:
        self._reorgs = reorgs
        self._repo = repo
        self._admin_token = admin_token
        self._rpc_pools = rpc_pools  # the pools this platform has a URL for (names only)
        self._wake_planner = wake_planner
        self._wake_outbox = wake_outbox
        self._verifier = verifier

    async def ApplyChainSync(self, request: pb.ApplyChainSyncRequest, context: Ctx) -> pb.ApplyChainSyncResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        org_id = require_uuid("org_id", request.org_id)
        if len(request.yaml.encode()) > MAX_YAML_BYTES:
            raise InvalidArgument("PAYLOAD_TOO_LARGE", f"yaml exceeds {MAX_YAML_BYTES} bytes", field="yaml")
        spec = parse_chain_sync(request.yaml)
        check_rpc_pools(spec, self._rpc_pools)  # before anything is written
        job_id, outcome = await self._repo.apply(org_id, spec)
        self._wake_planner()  # plan now, not at the next tick
        return pb.ApplyChainSyncResponse(
            job_id=job_id, name=spec.name, yaml_hash=spec.yaml_hash, outcome=_OUTCOMES[outcome]
        )

    async def PauseChainSync(self, request: pb.PauseChainSyncRequest, context: Ctx) -> pb.PauseChainSyncResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        await self._repo.set_enabled(require_uuid("org_id", request.org_id), _name(request.name), False)
        return pb.PauseChainSyncResponse()

    async def ResumeChainSync(self, request: pb.ResumeChainSyncRequest, context: Ctx) -> pb.ResumeChainSyncResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        org_id, name = require_uuid("org_id", request.org_id), _name(request.name)
        retried = await self._repo.set_enabled(org_id, name, True)
        if self._reorgs is not None:
            retried += await self._reorgs.retry_failed_repairs(org_id, name)
        self._wake_planner()
        if retried:
            self._wake_outbox()
        return pb.ResumeChainSyncResponse()

    async def GetChainSyncStatus(
        self, request: pb.GetChainSyncStatusRequest, context: Ctx
    ) -> pb.GetChainSyncStatusResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        org_id = require_uuid("org_id", request.org_id)
        out = pb.GetChainSyncStatusResponse()
        checks = await self._repo.latest_verifications(org_id, request.name)
        reorgs = await self._reorgs.summaries(org_id, request.name) if self._reorgs else {}
        recent = await self._reorgs.recent(org_id, request.name) if self._reorgs else {}
        for job, streams, failed in await self._repo.status(org_id, request.name):
            status = out.jobs.add(
                job_id=job["job_id"],
                name=job["name"],
                chain_id=job["chain_id"],
                mode=job["mode"],
                from_block=job["from_block"],
                paused=job["paused"],
                completed=job["completed"],
                yaml_hash=job["yaml_hash"],
            )
            if job["to_block"] is not None:
                status.to_block = job["to_block"]
            for s in streams:
                stream = status.streams.add(
                    dataset_key=s["dataset_key"],
                    dataset_name=registry_name(job["name"], s["dataset_key"]),
                    cursor=s["next_block"],
                    planned_to=s["next_block"],
                    synced_to=s["synced_to"],
                    in_flight=s["in_flight"],
                    completed_ranges=s["completed_ranges"],
                    completed_blocks=s["completed_blocks"],
                    last_error=s["last_error"],
                    last_error_category=s["last_error"].split("/", 1)[0] if s["last_error"] else "",
                    rpc_pool=s["rpc_pool"],
                )
                if s["head_block"] is not None:
                    stream.head_block = s["head_block"]
                    stream.head_observed_at.FromDatetime(s["observed_at"])
                for f in failed:
                    if f["dataset_key"] == s["dataset_key"]:
                        stream.failed_ranges.add(
                            range_start=f["range_start"],
                            range_end=f["range_end"],
                            reason=f["reason"],
                            attempts=f["attempts"],
                        )
            if (check := checks.get(job["job_id"])) is not None:
                _verification(status.last_verification, check)
            if (seen := reorgs.get(job["job_id"])) is not None:
                _reorgs(status.reorgs, seen, recent.get(job["job_id"], []))
            if status.streams:
                status.synced_to = min(s.synced_to for s in status.streams)
                status.planned_to = min(s.planned_to for s in status.streams)
        _rpc_endpoints(out, {s.rpc_pool for j in out.jobs for s in j.streams})
        return out

    async def VerifyChainSync(self, request: pb.VerifyChainSyncRequest, context: Ctx) -> pb.VerifyChainSyncResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        org_id = require_uuid("org_id", request.org_id)
        name = _name(request.name)
        if self._verifier is None:
            raise FailedPrecondition("VERIFY_NOT_CONFIGURED", "this server cannot read published data")
        result = await self._verifier.verify(
            org_id,
            name,
            request.from_block if request.HasField("from_block") else None,
            request.to_block if request.HasField("to_block") else None,
        )
        out = pb.VerifyChainSyncResponse(
            from_block=result.from_block,
            to_block=result.to_block,
            difference_count=len(result.differences),
            blocks_checked=result.to_block - result.from_block,
        )
        for d in result.differences[:MAX_DIFFERENCES_SHOWN]:
            out.differences.add(
                block_number=d.block_number,
                dataset_key=d.dataset_key,
                field=d.field,
                published=d.published,
                node=d.node,
            )
        return out


def _verification(out: pb.ChainSyncVerification, check: Mapping[str, Any]) -> None:
    out.checked_at.FromDatetime(check["checked_at"])
    out.from_block = check["from_block"]
    out.to_block = check["to_block"]
    out.difference_count = check["difference_count"]
    out.error = check["error"] or ""
    for d in json.loads(check["differences"]):
        out.differences.add(**d)


def _reorgs(out: pb.ChainSyncReorgs, summary: Mapping[str, Any], recent: list[Mapping[str, Any]]) -> None:
    out.seen = summary["reorgs_seen"]
    out.max_depth = summary["max_depth"]
    out.last_depth = summary["last_depth"]
    out.ranges_repaired = summary["ranges_repaired"]
    out.repairing = bool(summary["repairing"])
    out.stopped_reason = summary["stopped_reason"]
    out.repair_error = summary["repair_error"]
    for r in recent:
        item = out.recent.add(
            fork_block=r["fork_block"],
            tip_block=r["tip_block"],
            depth=r["depth"],
            status=r["status"],
            ranges=r["ranges"],
        )
        item.detected_at.FromDatetime(r["detected_at"])
        if r["repaired_at"] is not None:
            item.repaired_at.FromDatetime(r["repaired_at"])


def chain_sync_binding(servicer: ChainSyncServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["ChainSyncService"].full_name,
        register=lambda server: chain_sync_pb2_grpc.add_ChainSyncServiceServicer_to_server(servicer, server),
    )


def _rpc_endpoints(out: pb.GetChainSyncStatusResponse, pools: set[str]) -> None:
    """The endpoints of the jobs' pools, by index and host (never a URL), from this process."""
    for e in status_by_name(pools):
        item = out.rpc_endpoints.add(
            rpc_pool=e.rpc_pool,
            index=e.index,
            host=e.host,
            state=e.state,
            requests=e.requests,
            errors=e.errors,
            throttles=e.throttles,
        )
        if e.head_block is not None and e.head_observed_at is not None:
            item.head_block = e.head_block
            item.head_observed_at.FromSeconds(int(e.head_observed_at))
        if e.requests_per_second is not None:
            item.requests_per_second = e.requests_per_second
        if e.max_concurrent_requests is not None:
            item.max_concurrent_requests = e.max_concurrent_requests
