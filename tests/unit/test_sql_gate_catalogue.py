"""The gate's function allowlist, checked against DuckDB's own catalogue.

Adding a name to ``sql_gate_rules`` must not be enough to let a query touch the host: each
allowlisted name must be a DuckDB built-in of the kind it is listed as (scalar, aggregate,
window or macro; never table, table macro or pragma), flagged free of side effects by DuckDB,
and clear of a denylist of names that read files, settings, the catalog or the session.
The same checker is shown refusing ``read_text``, ``getenv`` and ``query``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pytest

from trace_platform.core import sql_gate_rules as rules
from trace_platform.core.sql_gate import SqlRejected, check_sql

# Spelled as syntax, not in duckdb_functions(): DuckDB rewrites them before binding.
SPECIAL_FORMS = frozenset(
    {"coalesce", "ifnull", "current_timestamp", "date", "unnest", "if", "percentile_cont", "percentile_disc"}
)
# Also table functions: reviewed, and refused as relations (test below).
ALSO_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "repeat", "histogram"})

# Substrings of names that touch files, settings, the catalog, secrets, extensions or the
# session, or that run SQL given as text. Deliberately broad: a false hit costs a review.
DENIED_FRAGMENTS = (
    "read_",
    "glob",
    "file",
    "getenv",
    "setting",
    "secret",
    "extension",
    "checkpoint",
    "pragma",
    "duckdb_",
    "query",
    "sql",
    "variable",
    "seed",
    "nextval",
    "currval",
    "setval",
    "catalog",
    "schema",
    "database",
    "privilege",
    "import",
    "export",
    "attach",
    "copy",
    "scan",
    "http",
    "log",
    "sleep",
    "uuid",
    "random",
    "version",
    "current_",
)
# Reviewed exceptions to the fragments above (pure functions whose names contain one).
FRAGMENT_EXCEPTIONS = frozenset({"log", "log2", "log10", "current_date", "current_timestamp"})
ALLOWED_KINDS = frozenset({"scalar", "aggregate", "window", "macro"})


@dataclass(frozen=True)
class CatalogueEntry:
    kinds: frozenset[str]
    side_effects: bool
    macro_text: str


def _catalogue(con: Any) -> dict[str, CatalogueEntry]:
    rows = con.execute(
        "SELECT lower(function_name), list(DISTINCT function_type), bool_or(coalesce(has_side_effects, false)), "
        "string_agg(coalesce(macro_definition, ''), ' ') FROM duckdb_functions() GROUP BY 1"
    ).fetchall()
    return {
        name: CatalogueEntry(frozenset(kinds), bool(side), (text or "").lower()) for name, kinds, side, text in rows
    }


def catalogue_problems(listed: Mapping[str, str], catalogue: Mapping[str, CatalogueEntry]) -> list[str]:
    """Why any of ``listed`` (name -> the kind it is listed as) may not be allowlisted."""
    problems: list[str] = []
    for name, kind in sorted(listed.items()):
        denied = [f for f in DENIED_FRAGMENTS if f in name and name not in FRAGMENT_EXCEPTIONS]
        if denied:
            problems.append(f"{name}: denied name ({', '.join(denied)})")
        if name in SPECIAL_FORMS:
            continue
        entry = catalogue.get(name)
        if entry is None:
            problems.append(f"{name}: not a DuckDB built-in")
            continue
        if entry.side_effects:
            problems.append(f"{name}: DuckDB flags side effects")
        if entry.kinds - ALLOWED_KINDS and name not in ALSO_TABLE_FUNCTIONS:
            problems.append(f"{name}: DuckDB has it as {sorted(entry.kinds - ALLOWED_KINDS)}")
        if kind not in entry.kinds and "macro" not in entry.kinds:
            problems.append(f"{name}: listed as {kind}, DuckDB has {sorted(entry.kinds)}")
        if "macro" in entry.kinds:
            body = [f for f in DENIED_FRAGMENTS if f in entry.macro_text and f not in FRAGMENT_EXCEPTIONS]
            if body:
                problems.append(f"{name}: macro body uses {body}")
    return problems


def _listed(extra: Iterable[tuple[str, str]] = ()) -> dict[str, str]:
    listed = {n: "aggregate" for n in rules.AGGREGATE_FUNCTIONS}
    listed.update({n: "window" for n in rules.WINDOW_FUNCTIONS})
    listed.update({n: "scalar" for n in rules.SCALAR_FUNCTIONS})
    listed.update(extra)
    return listed


@pytest.fixture(scope="module")
def catalogue() -> Iterator[dict[str, CatalogueEntry]]:
    con = duckdb.connect(":memory:")
    try:
        yield _catalogue(con)
    finally:
        con.close()


def test_the_allowlist_is_stated_once() -> None:
    assert rules.FUNCTION_NAMES == rules.AGGREGATE_FUNCTIONS | rules.WINDOW_FUNCTIONS | rules.SCALAR_FUNCTIONS
    assert not rules.AGGREGATE_FUNCTIONS & rules.SCALAR_FUNCTIONS
    assert not rules.WINDOW_FUNCTIONS & (rules.AGGREGATE_FUNCTIONS | rules.SCALAR_FUNCTIONS)
    assert rules.AGGREGATE_BY_NAME <= rules.SCALAR_FUNCTIONS
    assert not rules.SYNTAX_CALLS & rules.FUNCTION_NAMES


def test_every_allowlisted_name_is_a_harmless_duckdb_builtin(catalogue: dict[str, CatalogueEntry]) -> None:
    assert catalogue_problems(_listed(), catalogue) == []


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("read_text", "scalar"),  # reads a file (a table function)
        ("getenv", "scalar"),  # reads the host environment
        ("query", "scalar"),  # runs SQL given as text (a table function)
        ("current_setting", "scalar"),
        ("setseed", "scalar"),  # side effect
        ("nextval", "scalar"),
        ("glob", "scalar"),
        ("duckdb_settings", "scalar"),
        ("pragma_version", "scalar"),
        ("sql_auto_complete", "scalar"),
        ("json_execute_serialized_sql", "scalar"),
        ("getvariable", "scalar"),
        ("sleep_ms", "scalar"),
        ("write_log", "scalar"),
        ("no_such_function", "scalar"),
        ("sum", "scalar"),  # listed as the wrong kind
    ],
)
def test_the_checker_refuses_a_dangerous_addition(name: str, kind: str, catalogue: dict[str, CatalogueEntry]) -> None:
    problems = catalogue_problems(_listed([(name, kind)]), catalogue)
    assert problems and all(p.startswith(f"{name}:") for p in problems)


def test_the_checker_reads_duckdbs_own_flags(catalogue: dict[str, CatalogueEntry]) -> None:
    """Without the name denylist, DuckDB's own catalogue still refuses these."""
    assert catalogue["read_text"].kinds == {"table"}
    assert catalogue["query"].kinds == {"table"}
    assert catalogue["setseed"].side_effects and catalogue["random"].side_effects


def test_every_allowlisted_function_naming_a_function_by_string_is_checked() -> None:
    """A function whose argument names another function (DuckDB's catalogue: a parameter
    called function_name, name or function) calls what the string says: the gate must know
    it as such (``AGGREGATE_BY_NAME``) to hold the string to the allowlist."""
    con = duckdb.connect(":memory:")
    try:
        rows = con.execute(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() WHERE list_has_any("
            "list_transform(parameters, lambda p: lower(p)), ['function_name', 'name', 'function', 'func', 'fn'])"
        ).fetchall()
    finally:
        con.close()
    naming = {name for (name,) in rows}
    assert {"list_aggregate", "aggregate"} <= naming  # the catalogue query finds them
    assert sorted((naming & rules.FUNCTION_NAMES) - rules.AGGREGATE_BY_NAME) == []


@pytest.mark.parametrize("name", sorted(ALSO_TABLE_FUNCTIONS))
def test_scalar_names_that_are_also_table_functions_stay_refused_as_relations(name: str) -> None:
    check_sql(f"SELECT {name}(1, 3)")
    for sql in (
        f"FROM {name}(1, 3)",
        f"SELECT * FROM dataset, {name}(1, 3)",
        f"SELECT * FROM dataset, LATERAL {name}(1, 3)",
    ):
        with pytest.raises(SqlRejected) as exc:
            check_sql(sql)
        assert exc.value.reason == "TABLE_FUNCTION"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT list_aggregate([1], 'getenv')",
        "SELECT list_aggregate([1], 'query')",
        "SELECT list_aggr([1], 'read_text')",
        "SELECT array_aggregate([1], 'nextval')",
        "SELECT aggregate([1], 'current_setting')",
        "SELECT list_aggregate([1], 'main.sum')",
        "SELECT list_aggregate([1], 'sum ')",
        "SELECT list_aggregate([1], hash) FROM dataset",
        "SELECT list_aggregate([1], 'su' || 'm')",
        "SELECT list_aggregate([1])",
        "SELECT list_aggregate([1], 'upper')",  # a scalar, not an aggregate
    ],
)
def test_an_aggregate_named_by_a_string_must_be_an_allowlisted_literal(sql: str) -> None:
    with pytest.raises(SqlRejected) as exc:
        check_sql(sql)
    assert exc.value.reason == "DISALLOWED_FUNCTION"


def test_an_aggregate_named_by_an_allowlisted_literal_passes() -> None:
    for name in sorted(rules.AGGREGATE_BY_NAME):
        check_sql(f"SELECT {name}([1, 2], 'sum'), {name}([1, 2], 'STRING_AGG', '|')")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT lower(hex(block_number)) FROM dataset", None),  # sqlglot: LowerHex
        ("SELECT upper(hex(block_number)) FROM dataset", None),
        ("SELECT lower(getenv('x'))", "DISALLOWED_FUNCTION"),
        # DuckDB calls the name written; sqlglot turns it into allowlisted SHA1/SUBSTRING
        ("SELECT gen_random_uuid(block_number, 'x') FROM dataset", "DISALLOWED_FUNCTION"),
        ("SELECT uuid()", "DISALLOWED_FUNCTION"),
        ("SELECT random()", "DISALLOWED_FUNCTION"),
        ("SELECT x FROM dataset getenv(x) WHERE getenv('HOME') = ''", "DISALLOWED_FUNCTION"),
        ("SELECT list_transform([1], lambda x: getenv('HOME'))", "DISALLOWED_FUNCTION"),
        ("SELECT range(3) FROM dataset, range(3)", "TABLE_FUNCTION"),
        ("SELECT MAP {'a': 1}", "DISALLOWED_FUNCTION"),
        ("SELECT [1] && [2]", None),  # list_has_any as an operator
        ("SELECT ts AT TIME ZONE 'UTC' FROM dataset", None),
        ("SELECT 'a' COLLATE nocase", "DISALLOWED_FUNCTION"),
    ],
)
def test_generated_names_decide_not_sqlglot_classes(sql: str, reason: str | None) -> None:
    if reason is None:
        check_sql(sql)
        return
    with pytest.raises(SqlRejected) as exc:
        check_sql(sql)
    assert exc.value.reason == reason


def test_render_keywords_are_no_duckdb_function(catalogue: dict[str, CatalogueEntry]) -> None:
    """The gate skips these words before "(" in a rendering: none may be a callable name."""
    assert sorted(rules.RENDER_KEYWORDS & catalogue.keys()) == []
    assert sorted(rules.SYNTAX_CALLS & catalogue.keys()) == []
