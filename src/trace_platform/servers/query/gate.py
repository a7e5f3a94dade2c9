"""The SQL gate as the Query Service runs it: memoized, never logged.

The gate is deterministic, so a verdict is kept by the SHA-256 of the text, and an
accepted verdict also by the text's shape (``sql_shape``: the tokens with number values
masked), so a point lookup by block number is parsed once, not once per block. Only
acceptances are memoized; a rejected text is judged afresh every time. A verdict holds for
one set of relation names only (the datasets the caller attached), so that set is part of
every memo key: a text accepted over ``txs`` and ``logs`` is judged afresh over ``txs`` alone.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.relations import DEFAULT_RELATION
from trace_platform.core.sql_columns import ColumnRefs, column_refs
from trace_platform.core.sql_gate import SqlRejected, check_sql, sql_sha256, sql_shape

_INLINE_BYTES = 2048


class SqlDenied(InvalidArgument):
    """The SQL gate refused the text; ``reason`` is the gate's reason code."""


@dataclass(frozen=True)
class GatedSql:
    """An accepted query: its SHA-256 (the only form audit keeps) and the columns it reads."""

    sha256: str
    refs: ColumnRefs


class GateMemo:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._by_digest: OrderedDict[str, ColumnRefs] = OrderedDict()
        self._by_shape: OrderedDict[str, ColumnRefs] = OrderedDict()

    async def check(self, sql: str, relations: frozenset[str] = frozenset({DEFAULT_RELATION})) -> GatedSql:
        """The accepted query over exactly ``relations`` (checked lowercase names) and its
        CTEs, or ``SqlDenied`` with the gate's reason code."""
        digest = sql_sha256(sql)
        scope = ",".join(sorted(relations)) + "|"  # "|" never occurs in a relation name
        refs = _get(self._by_digest, scope + digest)
        if refs is not None:
            return GatedSql(digest, refs)
        shape = sql_shape(sql)
        refs = _get(self._by_shape, scope + shape) if shape is not None else None
        if refs is None:
            refs = await _judge(sql, relations)
            if shape is not None:
                self._put(self._by_shape, scope + shape, refs)
        self._put(self._by_digest, scope + digest, refs)
        return GatedSql(digest, refs)

    def _put(self, memo: OrderedDict[str, ColumnRefs], key: str, refs: ColumnRefs) -> None:
        memo[key] = refs
        if len(memo) > self._size:
            memo.popitem(last=False)


def _get(memo: OrderedDict[str, ColumnRefs], key: str) -> ColumnRefs | None:
    refs = memo.get(key)
    if refs is not None:
        memo.move_to_end(key)
    return refs


async def _judge(sql: str, relations: frozenset[str]) -> ColumnRefs:
    try:
        if len(sql) <= _INLINE_BYTES:
            return column_refs(check_sql(sql, allowed_relations=relations))
        # Parsing a large text takes long enough to stall other calls.
        return await asyncio.to_thread(lambda: column_refs(check_sql(sql, allowed_relations=relations)))
    except SqlRejected as exc:
        # ErrorInfo metadata for clients: the relations there are (the caller's own names).
        named = {"relations": ",".join(sorted(relations))} if exc.reason == "DISALLOWED_RELATION" else {}
        raise SqlDenied(exc.reason, denial_message(exc, relations), **named) from None


def denial_message(exc: SqlRejected, relations: frozenset[str]) -> str:
    """The gate's message; for a relation outside the allowlist, also the names that exist
    (the caller's own relation names, never anything of the SQL text)."""
    if exc.reason != "DISALLOWED_RELATION":
        return str(exc)
    return f"{exc}; the relations are {', '.join(sorted(relations))} (and the query's own CTEs)"
