"""What a udf job's bundle may answer, checked strictly before anything is written. Pure.

Two shapes are accepted:

- ``{"columns": ["a", "b"], "rows": [[1, "x"], [2, null]]}``: the names, then rows of
  exactly that many cells (the only shape that can say what an empty result's columns are),
  with an optional ``"types": ["BIGINT", "VARCHAR"]`` (BIGINT, DOUBLE, VARCHAR, BOOLEAN),
  which fixes each column's type whatever the rows hold: the way to keep one schema across
  the job's versions when a run may be empty or a column all null (a query over the
  dataset reads its versions together, and they must agree);
- ``[{"a": 1, "b": "x"}, ...]``: records, every one with exactly the first record's keys.

Cells are JSON scalars only (string, integer, number, boolean, null): a nested list or
object, a non-finite number or an integer outside int64 is refused. Each column has one
type across all rows (integers and numbers mixed make a float column; null fits any); a
column that is null in every row is a string column. Column names are SQL identifiers so
the published dataset can be queried by them. Every refusal is the UDF's failure,
``UDF_RESULT_INVALID``, naming the column or row at fault (names and positions only, never
a value); a refused answer publishes nothing.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pyarrow as pa

from trace_platform.core.errors import FailedPrecondition

UDF_RESULT_INVALID = "UDF_RESULT_INVALID"
MAX_ROWS = 100_000
MAX_COLUMNS = 256
MAX_STRING_CHARS = 65_536
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_INT64 = (-(2**63), 2**63 - 1)
_TYPES: dict[frozenset[str], pa.DataType] = {
    frozenset(): pa.string(),
    frozenset({"bool"}): pa.bool_(),
    frozenset({"int"}): pa.int64(),
    frozenset({"float"}): pa.float64(),
    frozenset({"int", "float"}): pa.float64(),
    frozenset({"str"}): pa.string(),
}

# A declared type, and the JSON kinds its cells may be.
_DECLARED: dict[str, tuple[pa.DataType, frozenset[str]]] = {
    "BIGINT": (pa.int64(), frozenset({"int"})),
    "DOUBLE": (pa.float64(), frozenset({"int", "float"})),
    "VARCHAR": (pa.string(), frozenset({"str"})),
    "BOOLEAN": (pa.bool_(), frozenset({"bool"})),
}


def invalid(why: str) -> FailedPrecondition:
    return FailedPrecondition(UDF_RESULT_INVALID, f"the UDF result is invalid: {why}", category="udf")


def udf_table(result_json: str) -> pa.Table:
    """The UDF's answer as a table, or ``UDF_RESULT_INVALID``."""
    try:
        doc = json.loads(result_json)
    except (ValueError, RecursionError):
        raise invalid("not JSON") from None
    columns, rows = _shape(doc)
    _check_columns(columns)
    declared = _declared_types(doc, len(columns))
    if len(rows) > MAX_ROWS:
        raise invalid(f"more than {MAX_ROWS} rows")
    arrays = []
    for i, name in enumerate(columns):
        values = [r[i] for r in rows]
        arrays.append(pa.array(values, type=_column_type(name, values, declared[i] if declared else None)))
    return pa.Table.from_arrays(arrays, names=columns)


def _declared_types(doc: Any, n: int) -> list[str] | None:
    if not isinstance(doc, dict) or "types" not in doc:
        return None
    types = doc["types"]
    if not isinstance(types, list) or len(types) != n:
        raise invalid(f'"types" must be a list of {n} type names')
    for t in types:
        if not isinstance(t, str) or t.upper() not in _DECLARED:
            raise invalid(f'"types" are {sorted(_DECLARED)}')
    return [t.upper() for t in types]


def _shape(doc: Any) -> tuple[list[Any], list[list[Any]]]:
    if isinstance(doc, dict):
        if not {"columns", "rows"} <= set(doc) <= {"columns", "rows", "types"}:
            raise invalid('an object answer has the keys "columns" and "rows" (and "types")')
        columns, rows = doc["columns"], doc["rows"]
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise invalid('"columns" and "rows" must be lists')
        for n, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise invalid(f"row {n} is not a list of {len(columns)} cells")
        return columns, rows
    if isinstance(doc, list):
        if not doc:
            raise invalid('an empty list names no columns: answer {"columns": [...], "rows": []}')
        if not all(isinstance(r, dict) for r in doc):
            raise invalid("a list answer is a list of objects (records)")
        columns = list(doc[0])
        keys = set(columns)
        for n, record in enumerate(doc):
            if set(record) != keys:
                raise invalid(f"record {n} has other keys than record 0")
        return columns, [[record[c] for c in columns] for record in doc]
    raise invalid('answer {"columns": [names], "rows": [[values]]} or a list of records')


def _check_columns(columns: list[Any]) -> None:
    if not columns:
        raise invalid("no columns")
    if len(columns) > MAX_COLUMNS:
        raise invalid(f"more than {MAX_COLUMNS} columns")
    for n, c in enumerate(columns):
        if not isinstance(c, str) or not COLUMN_RE.match(c):
            raise invalid(f"column {n} is not a name matching {COLUMN_RE.pattern}")
    if len({c.lower() for c in columns}) != len(columns):  # SQL names fold case
        raise invalid("duplicate column names")


def _column_type(name: str, values: list[Any], declared: str | None = None) -> pa.DataType:
    kinds: set[str] = set()
    for n, v in enumerate(values):
        kind = _kind(v)
        if kind == "bad":
            raise invalid(f"column {name!r} row {n}: not a JSON scalar in range")
        if kind != "null":
            kinds.add(kind)
    if declared is not None:
        dtype, fits = _DECLARED[declared]
        if not kinds <= fits:
            raise invalid(f"column {name!r} is declared {declared} but holds {sorted(kinds - fits)}")
        return dtype
    dtype = _TYPES.get(frozenset(kinds))
    if dtype is None:
        raise invalid(f"column {name!r} mixes types {sorted(kinds)}")
    return dtype


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):  # before int: bool is an int in Python
        return "bool"
    if isinstance(v, int):
        return "int" if _INT64[0] <= v <= _INT64[1] else "bad"
    if isinstance(v, float):
        return "float" if math.isfinite(v) else "bad"
    if isinstance(v, str):
        return "str" if len(v) <= MAX_STRING_CHARS else "bad"
    return "bad"
