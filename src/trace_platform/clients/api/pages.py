"""One page of a List RPC, and the walk over every page that the ``iterate*`` methods share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str  # "" on the last page


async def every_item(fetch: Callable[[str], Awaitable[Page[T]]]) -> AsyncIterator[T]:
    """Each item of every page, in order; the next page is fetched only when it is needed."""
    token = ""
    while True:
        page = await fetch(token)
        for item in page.items:
            yield item
        if not page.next_page_token:
            return
        token = page.next_page_token
