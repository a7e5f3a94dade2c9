"""The small interface every wake-up queue implements.

Queues are wake-ups, not sources of truth: messages may be duplicated, delayed or
reordered; consumers must be idempotent. Semantics follow SQS: a received message
is hidden for a visibility timeout and reappears unless acknowledged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    id: str
    payload: dict[str, Any]
    receive_count: int
    # What acknowledges this delivery (SQS's receipt handle; empty for PostgreSQL, whose
    # ``id`` does). Opaque, and not logged.
    receipt: str = field(default="", repr=False)


class Queue(Protocol):
    async def publish(self, queue: str, payloads: Sequence[dict[str, Any]]) -> None: ...

    async def receive(self, queue: str, max_messages: int, visibility_seconds: float) -> list[Message]: ...

    async def ack(self, queue: str, messages: Sequence[Message]) -> None: ...

    async def change_visibility(self, queue: str, messages: Sequence[Message], seconds: float) -> None: ...

    async def wait(self, queue: str, timeout: float) -> None:
        """Return early when a message may be available, else after ``timeout``."""
        ...

    async def close(self) -> None: ...
