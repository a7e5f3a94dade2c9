"""SinkService: list and replay dead-lettered batches (admin token)."""

from __future__ import annotations

from typing import Any

from trace_platform.core.alert_rows import BatchRejected
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, NotFound
from trace_platform.core.validation import require_uuid
from trace_platform.gen.trace.v1 import sink_pb2, sink_pb2_grpc
from trace_platform.servers.common.auth import ADMIN_TOKEN, require_shared_secret
from trace_platform.servers.common.server import ServiceBinding
from trace_platform.servers.sink.consumer import SinkProcessor

Ctx = Any  # grpc.aio.ServicerContext
pb = sink_pb2
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _after_seq(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit() or len(token) > 18:
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not valid", field="page_token")
    return int(token)


class SinkServicer(sink_pb2_grpc.SinkServiceServicer):
    def __init__(self, processor: SinkProcessor, admin_token: str | None) -> None:
        self._processor = processor
        self._repo = processor.repo
        self._admin_token = admin_token

    async def ListDeadLetters(self, request: pb.ListDeadLettersRequest, context: Ctx) -> pb.ListDeadLettersResponse:
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        if request.page_size < 0:
            raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must be >= 0", field="page_size")
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        rows = await self._repo.list_dead_letters(_after_seq(request.page_token), size + 1)
        out = pb.ListDeadLettersResponse()
        for r in rows[:size]:
            dl = out.dead_letters.add(
                dead_letter_id=r.dead_letter_id,
                publish_id=r.publish_id,
                batch_uri=r.batch_uri,
                reason=r.reason,
                row_number=r.row_number,
                org_id=r.org_id,
                task_id=r.task_id,
            )
            dl.created_at.FromDatetime(r.created_at)
            if r.replayed_at is not None:
                dl.replayed_at.FromDatetime(r.replayed_at)
        if len(rows) > size:
            out.next_page_token = str(rows[size - 1].seq)
        return out

    async def ReplayDeadLetter(self, request: pb.ReplayDeadLetterRequest, context: Ctx) -> pb.ReplayDeadLetterResponse:
        """Re-reads the artifact (fixed in place) and applies it, still all or nothing."""
        require_shared_secret(context, ADMIN_TOKEN, self._admin_token)
        dl_id = require_uuid("dead_letter_id", request.dead_letter_id)
        found = await self._repo.get_dead_letter(dl_id)
        if found is None:
            raise NotFound("DEAD_LETTER_NOT_FOUND", "no such dead letter")
        publish_id, replayed_at = found
        publish = await self._repo.get_publish(publish_id)
        if replayed_at is not None or publish is None or publish.status != "dead_lettered":
            raise FailedPrecondition("ALREADY_REPLAYED", "the batch was already applied")
        try:
            applied = await self._processor.apply(publish, "dead_lettered")
        except BatchRejected as rejected:
            await self._repo.dead_letter(publish, rejected.reason, rejected.row_number)
            raise FailedPrecondition(
                "BATCH_STILL_INVALID",
                f"batch still rejected: {rejected.reason} at row {rejected.row_number}",
                batch_reason=rejected.reason,
                row_number=str(rejected.row_number),
            ) from None
        if applied is None:
            raise FailedPrecondition("ALREADY_REPLAYED", "the batch was already applied")
        return pb.ReplayDeadLetterResponse(rows_upserted=applied.new_events, rows_in_batch=applied.rows)


def sink_binding(servicer: SinkServicer) -> ServiceBinding:
    return ServiceBinding(
        name=pb.DESCRIPTOR.services_by_name["SinkService"].full_name,
        register=lambda server: sink_pb2_grpc.add_SinkServiceServicer_to_server(servicer, server),
    )
