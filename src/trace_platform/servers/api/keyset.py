"""The (created_at, id) keyset of List RPCs that page rows by creation, over
``core.paging`` tokens: {"t": ISO timestamp, "id": uuid} of the last row of a page."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import PageRequest, encode_page_token

T = TypeVar("T")


def parse_page(page_size: int, page_token: str) -> tuple[PageRequest, tuple[datetime, str] | None]:
    page = PageRequest.parse(page_size, page_token)
    if page.after is None:
        return page, None
    try:
        at = datetime.fromisoformat(str(page.after["t"]))
        last = str(uuid.UUID(str(page.after["id"])))
    except (KeyError, ValueError, TypeError):
        raise InvalidArgument("PAGE_TOKEN_INVALID", "page_token is not one this service issued") from None
    if at.tzinfo is None:
        raise InvalidArgument("PAGE_TOKEN_INVALID", "page_token is not one this service issued")
    return page, (at, last)


def page_of(page: PageRequest, rows: Sequence[T], key: Callable[[T], tuple[datetime, str]]) -> tuple[list[T], str]:
    """The page (at most ``size`` of the ``size + 1`` rows fetched) and the next token."""
    items = list(rows[: page.size])
    if len(rows) <= page.size or not items:
        return items, ""
    at, last = key(items[-1])
    return items, encode_page_token({"t": at.isoformat(), "id": last})
