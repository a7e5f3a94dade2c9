"""Red-team variants of issue 13's SQL gate wall (hole 7: the allowlist is stated in
DuckDB's names and holds against every spelling).

DuckDB evaluates some bare words as functions (``current_user``, ``current_schema``,
...), and does so for the *quoted* word too when no column has that name: ``SELECT
"current_schema"`` ran ``current_schema()`` past the gate, which refused only the
unquoted spelling. The class is taken from DuckDB's own catalogue: every function name
DuckDB answers as a bare word, quoted or not, in any position, must be allowlisted or
refused. A column of such a name stays reachable: qualified, or defined by the query.
"""

from __future__ import annotations

import duckdb
import pytest

from trace_platform.core import sql_gate_rules as rules
from trace_platform.core.sql_gate import SqlRejected, check_sql


def _bare_word_functions() -> list[str]:
    """Function names DuckDB evaluates as a bare word (quoted or not), from its catalogue."""
    con = duckdb.connect()
    names = sorted({r[0] for r in con.execute("SELECT function_name FROM duckdb_functions()").fetchall()})
    found = []
    for name in names:
        if not rules.PLAIN_IDENTIFIER.fullmatch(name):
            continue
        for text in (f'SELECT "{name}"', f"SELECT {name}"):
            try:
                con.execute(text).fetchall()
            except duckdb.Error:
                continue
            found.append(name)
            break
    return found


BARE_WORDS = _bare_word_functions()


def test_the_catalogue_has_bare_word_functions() -> None:
    assert {"current_user", "current_schema", "current_catalog"} <= set(BARE_WORDS), BARE_WORDS


@pytest.mark.parametrize("name", [n for n in BARE_WORDS if n not in rules.FUNCTION_NAMES])
@pytest.mark.parametrize(
    "template",
    [
        'SELECT "{n}"',
        "SELECT {n}",
        'SELECT "{U}"',
        'SELECT x FROM dataset WHERE "{n}" IS NOT NULL',
        'SELECT list_transform([1], x -> "{n}")',
        'SELECT 1 FROM dataset ORDER BY "{n}"',
    ],
)
def test_a_bare_word_function_off_the_allowlist_is_refused_however_spelled(name: str, template: str) -> None:
    sql = template.format(n=name, U=name.upper())
    with pytest.raises(SqlRejected) as refused:
        check_sql(sql)
    assert refused.value.reason == "DISALLOWED_FUNCTION", sql


@pytest.mark.parametrize(
    "sql",
    [
        'SELECT dataset."user", t."current_schema" FROM dataset, dataset AS t',
        'SELECT "user", "current_schema" FROM (SELECT 1 AS "user", 2 AS "current_schema")',
        'SELECT "current_user" FROM (SELECT 1) AS t("current_user")',
        "SELECT current_date",
    ],
)
def test_a_column_of_such_a_name_stays_reachable(sql: str) -> None:
    check_sql(sql)
