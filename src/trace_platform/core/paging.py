"""Keyset pagination for every List RPC: ``page_size`` clamped, ``page_token`` opaque.

A token is the base64url of a small JSON object naming where the last page ended
(for example ``{"t": created_at, "id": ...}``); a server never pages by OFFSET, so a
page stays stable while rows are added. A token that does not decode is the caller's
error: INVALID_ARGUMENT ``PAGE_TOKEN_INVALID``.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from trace_platform.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 1024
T = TypeVar("T")


@dataclass(frozen=True)
class PageRequest:
    size: int
    after: dict[str, Any] | None  # None: the first page

    @staticmethod
    def parse(page_size: int, page_token: str) -> PageRequest:
        if page_size < 0:
            raise InvalidArgument("PAGE_SIZE_INVALID", "page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return PageRequest(size, decode_page_token(page_token) if page_token else None)

    def next_token(self, rows_seen: int, last_key: dict[str, Any] | None) -> str:
        """Fetch ``size + 1`` rows; when more than ``size`` came back there is a next page."""
        return encode_page_token(last_key) if rows_seen > self.size and last_key is not None else ""

    def after_created(self) -> tuple[datetime, str] | None:
        """The ``(created_at, id)`` keyset the previous page ended at (None: the first page),
        for the List RPCs that page rows by creation."""
        if self.after is None:
            return None
        try:
            at = datetime.fromisoformat(str(self.after["t"]))
            last = str(uuid.UUID(str(self.after["id"])))
        except (KeyError, ValueError, TypeError):
            raise _not_ours() from None
        if at.tzinfo is None:
            raise _not_ours()
        return at, last

    def page_by_created(self, rows: Sequence[T], key: Callable[[T], tuple[datetime, str]]) -> tuple[list[T], str]:
        """The page (at most ``size`` of the ``size + 1`` rows fetched) and the next token."""
        items = list(rows[: self.size])
        last = None
        if items:
            at, row_id = key(items[-1])
            last = {"t": at.isoformat(), "id": row_id}
        return items, self.next_token(len(rows), last)


def encode_page_token(key: dict[str, Any]) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _not_ours() -> InvalidArgument:
    return InvalidArgument("PAGE_TOKEN_INVALID", "page_token is not one this service issued")


def decode_page_token(token: str) -> dict[str, Any]:
    bad = _not_ours()
    if len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(value, dict):
        raise bad
    return value
