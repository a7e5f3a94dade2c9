"""Named SQL queries loaded once from ``sql/*.sql`` (``-- name: x`` headers)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_named_queries(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name}")
        queries[name] = body.strip()
    return queries


@cache
def load(module: str) -> dict[str, str]:
    """Queries of ``sql/{module}.sql``."""
    text = resources.files(__package__).joinpath("sql", f"{module}.sql").read_text()
    return parse_named_queries(text)
