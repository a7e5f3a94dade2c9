"""Relation names a query's datasets are attached under (``txs``, ``logs``, ...).

The caller names each relation; the SQL gate then allows exactly those names (and the
query's own CTEs), and the query process creates one view per name. A name is therefore
checked before anything else sees it: a plain lowercase-foldable identifier, short, not a
DuckDB keyword (the view must be nameable unquoted) and not a catalog or system name
(``main``, ``temp``, ``duckdb_*``, ``information_schema``, ...: the gate never resolves
those, so such a relation could never be read). Names are unique after case folding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

from trace_platform.core import sql_gate_rules as rules
from trace_platform.core.errors import InvalidArgument

DEFAULT_RELATION = "dataset"
MAX_RELATIONS = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# DuckDB's keywords other than the unreserved ones (``duckdb_keywords()`` of DuckDB 2.0:
# reserved, column_name and type_function): a view of such a name needs quoting in SQL.
_KEYWORD_TEXT = """
    all analyse analyze and any array as asc asymmetric both case cast check collate column constraint
    create default deferrable desc describe distinct do else end except false fetch for foreign from
    group having in initially intersect into lambda lateral leading limit not null offset on only or
    order pivot pivot_longer pivot_wider placing primary qualify references returning select show some
    summarize symmetric table then to trailing true union unique unpivot using variadic when where
    window with
    between bigint bit boolean char character coalesce columns dec decimal exists extract float
    generated grouping grouping_id inout int integer interval map national nchar none nullif numeric
    out overlay position precision real row setof smallint struct substring time timestamp treat trim
    try_cast tuple values varchar xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces
    xmlparse xmlpi xmlroot xmlserialize xmltable
    anti asof at authorization binary by collation concurrently cross freeze full glob ilike inner is
    isnull join left like natural notnull outer overlaps positional right semi similar tablesample
    unpack verbose
"""
_KEYWORDS: frozenset[str] = frozenset(_KEYWORD_TEXT.split())

T = TypeVar("T")


def relation_name(value: str) -> str:
    """The relation's lookup key (lowercase), or INVALID_ARGUMENT RELATION_NAME_INVALID."""
    if not _NAME.fullmatch(value or ""):
        raise InvalidArgument(
            "RELATION_NAME_INVALID",
            "a relation name is a letter or _ then up to 62 letters, digits or _",
            field="relation",
        )
    key = value.lower()
    if key in _KEYWORDS or key in rules.RESERVED_RELATION_NAMES or key.startswith(rules.RESERVED_RELATION_PREFIXES):
        raise InvalidArgument("RELATION_NAME_INVALID", f"{key!r} is a reserved name", field="relation")
    return key


def named_relations(pairs: Sequence[tuple[str, T]]) -> tuple[tuple[str, T], ...]:
    """``(relation, dataset)`` pairs with checked, unique names, in the caller's order:
    at least one, at most ``MAX_RELATIONS``."""
    if not pairs:
        raise InvalidArgument("DATASET_REQUIRED", "name at least one dataset", field="datasets")
    if len(pairs) > MAX_RELATIONS:
        raise InvalidArgument(
            "TOO_MANY_DATASETS", f"a query attaches at most {MAX_RELATIONS} datasets", field="datasets"
        )
    out: list[tuple[str, T]] = []
    seen: set[str] = set()
    for name, dataset in pairs:
        key = relation_name(name)
        if key in seen:
            raise InvalidArgument("RELATION_NAME_DUPLICATE", f"relation {key!r} is named twice", field="relation")
        seen.add(key)
        out.append((key, dataset))
    return tuple(out)


def requested(shorthand: str, pairs: Sequence[tuple[str, str]], field: str) -> Sequence[tuple[str, str]]:
    """The request's ``(relation, dataset)`` pairs: the repeated field, or the one-dataset
    shorthand ``field`` attached as ``dataset`` (never both)."""
    if shorthand and pairs:
        raise InvalidArgument("DATASETS_AMBIGUOUS", f"give {field} or datasets, not both", field=field)
    if shorthand:
        return ((DEFAULT_RELATION, shorthand),)
    return pairs
