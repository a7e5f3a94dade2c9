"""Protobuf <-> domain conversion for the Dispatcher, with input validation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from trace_platform.adapters.postgres.task_repository import TaskRow
from trace_platform.core.config import DispatcherSettings
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.models import (
    DatasetEvent,
    DatasetGrant,
    DatasetPublication,
    NewTask,
    StorageRef,
    TaskRef,
    TaskStatus,
)
from trace_platform.core.validation import (
    SLUG_RE,
    require_attempt,
    require_json,
    require_slug,
    require_uuid,
)
from trace_platform.gen.trace.v1 import common_pb2, dispatcher_pb2
from trace_platform.servers.dispatcher.service import ClaimedTask

STATUS_TO_PB = {
    TaskStatus.QUEUED: common_pb2.TASK_STATUS_QUEUED,
    TaskStatus.RUNNING: common_pb2.TASK_STATUS_RUNNING,
    TaskStatus.COMPLETED: common_pb2.TASK_STATUS_COMPLETED,
    TaskStatus.FAILED: common_pb2.TASK_STATUS_FAILED,
    TaskStatus.CANCELED: common_pb2.TASK_STATUS_CANCELED,
}
COMPLETION_FROM_PB = {
    dispatcher_pb2.COMPLETION_STATUS_COMPLETED: TaskStatus.COMPLETED,
    dispatcher_pb2.COMPLETION_STATUS_FAILED: TaskStatus.FAILED,
    dispatcher_pb2.COMPLETION_STATUS_CANCELED: TaskStatus.CANCELED,
}
NOT_CLAIMED_REASON = {
    TaskStatus.RUNNING: dispatcher_pb2.NOT_CLAIMED_REASON_ALREADY_RUNNING,
    TaskStatus.COMPLETED: dispatcher_pb2.NOT_CLAIMED_REASON_COMPLETED,
    TaskStatus.CANCELED: dispatcher_pb2.NOT_CLAIMED_REASON_CANCELED,
    TaskStatus.FAILED: dispatcher_pb2.NOT_CLAIMED_REASON_FAILED,
    None: dispatcher_pb2.NOT_CLAIMED_REASON_NOT_FOUND,
}
MAX_EVENTS = 1000
SCOPE_RE = SLUG_RE


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def heartbeat_response(
    lease_expires_at: datetime, renewal: tuple[str, float] | None
) -> dispatcher_pb2.HeartbeatResponse:
    """The new lease expiry, and the renewed capability token if one was issued."""
    resp = dispatcher_pb2.HeartbeatResponse(lease_expires_at=timestamp(lease_expires_at))
    if renewal is not None:
        resp.capability_token = renewal[0]
        resp.capability_expires_at.FromSeconds(int(renewal[1]))
    return resp


def task_ref(msg: common_pb2.TaskRef, has_field: bool) -> TaskRef:
    if not has_field:
        raise InvalidArgument("MISSING_FIELD", "task is required", field="task")
    return TaskRef(
        task_id=require_uuid("task.task_id", msg.task_id),
        attempt=require_attempt(msg.attempt),
        lease_token=require_uuid("task.lease_token", msg.lease_token),
    )


def storage_ref(msg: common_pb2.StorageRef, field: str) -> StorageRef:
    try:
        return StorageRef.from_dict(
            {"scheme": msg.scheme, "bucket": msg.bucket, "prefix": msg.prefix, "glob": msg.glob}
        )
    except (KeyError, ValueError) as exc:
        raise InvalidArgument("INVALID_STORAGE_REF", f"{field}: {exc}", field=field) from None


def grant(msg: common_pb2.DatasetGrant, i: int) -> DatasetGrant:
    return DatasetGrant(
        dataset_uuid=require_uuid(f"datasets[{i}].dataset_uuid", msg.dataset_uuid),
        dataset_version=require_uuid(f"datasets[{i}].dataset_version", msg.dataset_version),
        storage_ref=storage_ref(msg.storage_ref, f"datasets[{i}].storage_ref") if msg.HasField("storage_ref") else None,
    )


def new_task(spec: dispatcher_pb2.TaskSpec, i: int, settings: DispatcherSettings) -> NewTask:
    if spec.max_attempts < 0 or spec.max_attempts > 100:
        raise InvalidArgument("INVALID_MAX_ATTEMPTS", "max_attempts must be 0..100", field=f"tasks[{i}].max_attempts")
    return NewTask(
        org_id=require_uuid(f"tasks[{i}].org_id", spec.org_id),
        operator=require_slug(f"tasks[{i}].operator", spec.operator),
        config=require_json(f"tasks[{i}].config_json", spec.config_json, dict, settings.max_config_bytes, {}),
        inputs=require_json(f"tasks[{i}].inputs_json", spec.inputs_json, list, settings.max_config_bytes, []),
        max_attempts=spec.max_attempts or settings.default_max_attempts,
        datasets=tuple(grant(g, j) for j, g in enumerate(spec.datasets)),
        task_id=require_uuid(f"tasks[{i}].task_id", spec.task_id) if spec.task_id else None,
    )


def event(msg: common_pb2.DatasetEvent, i: int) -> DatasetEvent:
    return DatasetEvent(
        dataset_uuid=require_uuid(f"events[{i}].dataset_uuid", msg.dataset_uuid),
        dataset_version=require_uuid(f"events[{i}].dataset_version", msg.dataset_version),
        cursor=msg.cursor if msg.HasField("cursor") else None,
        partition_key=msg.partition_key[:256],
        start=msg.start if msg.HasField("start") else None,
        end=msg.end if msg.HasField("end") else None,
    )


def events(msgs: list[common_pb2.DatasetEvent]) -> list[DatasetEvent]:
    if len(msgs) > MAX_EVENTS:
        raise InvalidArgument("TOO_MANY_EVENTS", f"at most {MAX_EVENTS} events per call", field="events")
    return [event(m, i) for i, m in enumerate(msgs)]


def publication(msg: common_pb2.DatasetPublication, i: int) -> DatasetPublication:
    if not msg.HasField("storage_ref"):
        raise InvalidArgument("MISSING_FIELD", "storage_ref is required", field=f"datasets_published[{i}]")
    start = msg.range_start if msg.HasField("range_start") else None
    end = msg.range_end if msg.HasField("range_end") else None
    if start is not None and end is not None and end <= start:
        raise InvalidArgument("INVALID_RANGE", "range_end must exceed range_start", field=f"datasets_published[{i}]")
    return DatasetPublication(
        dataset_uuid=require_uuid(f"datasets_published[{i}].dataset_uuid", msg.dataset_uuid),
        dataset_version=require_uuid(f"datasets_published[{i}].dataset_version", msg.dataset_version),
        storage_ref=storage_ref(msg.storage_ref, f"datasets_published[{i}].storage_ref"),
        config_hash=msg.config_hash[:128],
        range_start=start,
        range_end=end,
    )


def output(msg: common_pb2.TaskOutput, i: int) -> dict[str, object]:
    return {
        "output_index": msg.output_index,
        "dataset_uuid": require_uuid(f"outputs[{i}].dataset_uuid", msg.dataset_uuid),
        "dataset_version": require_uuid(f"outputs[{i}].dataset_version", msg.dataset_version),
        "location": msg.location[:1024],
        "cursor": msg.cursor if msg.HasField("cursor") else None,
        "row_count": msg.row_count,
    }


def task_payload(task: TaskRow) -> common_pb2.TaskPayload:
    return common_pb2.TaskPayload(
        task_id=task.task_id,
        attempt=task.attempt,
        org_id=task.org_id,
        operator=task.operator,
        config_json=task.config_json,
        inputs_json=task.inputs_json,
        datasets=[grant_pb(g) for g in task.grants()],
        status=STATUS_TO_PB[task.status],
    )


def grant_pb(g: DatasetGrant) -> common_pb2.DatasetGrant:
    msg = common_pb2.DatasetGrant(dataset_uuid=g.dataset_uuid, dataset_version=g.dataset_version)
    if g.storage_ref is not None:
        msg.storage_ref.CopyFrom(common_pb2.StorageRef(**g.storage_ref.to_dict()))
    return msg


def claim_request(msg: dispatcher_pb2.ClaimTaskRequest) -> tuple[str, str]:
    """(task_id, worker_id) of a claim."""
    task_id = require_uuid("task_id", msg.task_id)
    if not msg.worker_id or len(msg.worker_id) > 256:
        raise InvalidArgument("INVALID_WORKER_ID", "worker_id is required (at most 256 chars)", field="worker_id")
    return task_id, msg.worker_id


def claim_response(result: ClaimedTask | TaskStatus | None) -> dispatcher_pb2.ClaimTaskResponse:
    if isinstance(result, ClaimedTask):
        return dispatcher_pb2.ClaimTaskResponse(
            claimed=dispatcher_pb2.Claimed(
                attempt=result.task.attempt,
                lease_token=result.lease_token,
                lease_expires_at=timestamp(result.lease_expires_at),
                capability_token=result.capability_token,
                task=task_payload(result.task),
            )
        )
    return dispatcher_pb2.ClaimTaskResponse(not_claimed=dispatcher_pb2.NotClaimed(reason=NOT_CLAIMED_REASON[result]))


@dataclass(frozen=True)
class CompletionArgs:
    ref: TaskRef
    status: TaskStatus
    events: list[DatasetEvent]
    outputs: list[dict[str, Any]]
    publications: list[DatasetPublication]
    error_message: str
    permanent: bool = False

    @property
    def live_fast_path(self) -> bool:
        """A plain success with nothing else to record (one statement when the lease is live)."""
        return self.status is TaskStatus.COMPLETED and not self.events and not self.publications


def completion(msg: dispatcher_pb2.CompleteTaskRequest, ref: TaskRef) -> CompletionArgs:
    """The rest of a completion, once ``ref`` (from ``task_ref``) is authorized."""
    status = COMPLETION_FROM_PB.get(msg.status)
    if status is None:
        raise InvalidArgument("INVALID_STATUS", "status is required", field="status")
    if msg.permanent and status is not TaskStatus.FAILED:
        raise InvalidArgument("INVALID_PERMANENT", "only a failure can be permanent", field="permanent")
    return CompletionArgs(
        ref,
        status,
        events(list(msg.events)),
        [output(o, i) for i, o in enumerate(msg.outputs)],
        [publication(p, i) for i, p in enumerate(msg.datasets_published)],
        msg.error_message,
        msg.permanent,
    )
