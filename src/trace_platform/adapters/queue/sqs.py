"""SQS wake-up queue behind the same ``Queue`` interface as PostgreSQL's.

Wake-ups only: the tasks, publishes and their state stay in PostgreSQL, so what SQS
does on its own (at-least-once delivery, duplicates, any order) is harmless: consumers
claim through the Dispatcher, and a claim of a task already claimed or finished is a
no-op that acknowledges (deletes) the message. Each logical queue (``tasks``,
``buffers``) is the SQS queue ``<prefix>-<name>``; the operator provisions them.

Receives long-poll (``WaitTimeSeconds``), so ``wait`` returns at once: the next
receive is the wait. Deletes, visibility changes and sends go in batches of ten (SQS's
limit per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from trace_platform.adapters.aws.clients import open_client
from trace_platform.adapters.queue.base import Message
from trace_platform.core.config import Settings
from trace_platform.core.errors import Unavailable

log = logging.getLogger(__name__)
BATCH = 10  # SQS's entries per batch call and messages per receive
MAX_VISIBILITY_SECONDS = 43_200  # SQS's cap (12 h)


def visibility(seconds: float) -> int:
    """SQS takes whole seconds; round up so a message is never hidden for less than asked."""
    return max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds)))


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


class SqsQueue:
    def __init__(self, client: Any, url_prefix: str, wait_seconds: int, stack: contextlib.AsyncExitStack) -> None:
        self._client = client
        self._prefix = url_prefix.rstrip("/")
        self._wait_seconds = wait_seconds
        self._stack = stack

    @staticmethod
    async def open(settings: Settings) -> SqsQueue:
        q = settings.queue
        stack = contextlib.AsyncExitStack()
        # A long poll holds the connection for up to wait_seconds: read timeout beyond it.
        client = await open_client(
            stack, "sqs", settings.object_store, q.sqs_endpoint_url, read_timeout=q.sqs_wait_seconds + 10
        )
        return SqsQueue(client, q.sqs_queue_url, q.sqs_wait_seconds, stack)

    def url(self, queue: str) -> str:
        return f"{self._prefix}-{queue}"

    async def publish(self, queue: str, payloads: Sequence[dict[str, Any]]) -> None:
        for chunk in _chunks(payloads):
            entries = [{"Id": str(i), "MessageBody": json.dumps(p)} for i, p in enumerate(chunk)]
            resp = await self._call("send_message_batch", QueueUrl=self.url(queue), Entries=entries)
            if resp.get("Failed"):
                # The caller (the outbox relay) keeps its rows and sends again: the ones
                # that went through arrive twice, which wake-ups survive.
                raise Unavailable("SQS_SEND_FAILED", f"{len(resp['Failed'])} wake-ups not sent to {queue}")

    async def receive(self, queue: str, max_messages: int, visibility_seconds: float) -> list[Message]:
        resp = await self._call(
            "receive_message",
            QueueUrl=self.url(queue),
            MaxNumberOfMessages=max(1, min(BATCH, max_messages)),
            WaitTimeSeconds=self._wait_seconds,
            VisibilityTimeout=visibility(visibility_seconds),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [_message(m) for m in resp.get("Messages", [])]

    async def ack(self, queue: str, messages: Sequence[Message]) -> None:
        for chunk in _chunks(messages):
            entries = [{"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(chunk)]
            resp = await self._call("delete_message_batch", QueueUrl=self.url(queue), Entries=entries)
            if resp.get("Failed"):
                # Not raised: an undeleted wake-up reappears and its claim is refused.
                log.warning("sqs delete partly failed", extra={"queue": queue, "failed": len(resp["Failed"])})

    async def change_visibility(self, queue: str, messages: Sequence[Message], seconds: float) -> None:
        for chunk in _chunks(messages):
            entries = [
                {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": visibility(seconds)}
                for i, m in enumerate(chunk)
            ]
            resp = await self._call("change_message_visibility_batch", QueueUrl=self.url(queue), Entries=entries)
            if resp.get("Failed"):
                log.warning(
                    "sqs visibility change partly failed", extra={"queue": queue, "failed": len(resp["Failed"])}
                )

    async def wait(self, queue: str, timeout: float) -> None:
        # The next receive long-polls; without long polling, wait out the interval.
        if self._wait_seconds == 0:
            await asyncio.sleep(timeout)

    async def close(self) -> None:
        await self._stack.aclose()

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp: dict[str, Any] = await getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "") or "error"
            raise Unavailable("SQS_REQUEST_FAILED", f"sqs {operation} failed ({code})") from None
        except BotoCoreError:
            raise Unavailable("SQS_UNREACHABLE", f"sqs {operation}: the SQS API could not be reached") from None
        return resp


def _message(raw: dict[str, Any]) -> Message:
    try:
        payload = json.loads(raw.get("Body", ""))
    except ValueError:
        payload = None
    # A body that is not a JSON object becomes an empty payload: consumers drop (ack) it.
    count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    return Message(raw["MessageId"], payload if isinstance(payload, dict) else {}, count, raw["ReceiptHandle"])
