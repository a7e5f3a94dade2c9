from __future__ import annotations

import pytest

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageRequest, encode_page_token


def test_sizes_are_clamped_and_defaulted() -> None:
    assert PageRequest.parse(0, "").size == DEFAULT_PAGE_SIZE
    assert PageRequest.parse(5, "").size == 5
    assert PageRequest.parse(10**6, "").size == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as err:
        PageRequest.parse(-1, "")
    assert err.value.reason == "PAGE_SIZE_INVALID"


def test_a_token_round_trips_its_key() -> None:
    key = {"t": "2026-12-02T05:00:00+00:00", "id": "abc"}
    assert PageRequest.parse(10, encode_page_token(key)).after == key
    assert PageRequest.parse(10, "").after is None


@pytest.mark.parametrize("token", ["%%%", "bm90IGpzb24", encode_page_token({"a": 1})[:-3] + "!!", "W10", "x" * 2000])
def test_a_token_not_issued_here_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        PageRequest.parse(10, token)
    assert err.value.reason == "PAGE_TOKEN_INVALID"


def test_next_token_only_when_more_rows_came_back() -> None:
    page = PageRequest.parse(2, "")
    assert page.next_token(2, {"id": "b"}) == ""
    assert PageRequest.parse(2, page.next_token(3, {"id": "b"})).after == {"id": "b"}
