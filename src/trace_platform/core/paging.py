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
from dataclasses import dataclass
from typing import Any

from trace_platform.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_CHARS = 1024


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


def encode_page_token(key: dict[str, Any]) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any]:
    bad = InvalidArgument("PAGE_TOKEN_INVALID", "page_token is not one this service issued")
    if len(token) > MAX_TOKEN_CHARS:
        raise bad
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(value, dict):
        raise bad
    return value
