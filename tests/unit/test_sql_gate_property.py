"""Property-based tests of the fail-closed SQL gate (trace_platform.core.sql_gate)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.test_sql_gate import duckdb_disagreements
from trace_platform.core.sql_gate import REASONS, SqlRejected, check_sql

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    database=None,  # no example database written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def duck() -> Iterator[Any]:
    con = duckdb.connect(":memory:")
    con.execute("CREATE TABLE dataset (block_number BIGINT, hash VARCHAR, ts TIMESTAMP, value DOUBLE)")
    con.execute(
        "INSERT INTO dataset VALUES (1, '0xab', TIMESTAMP '2024-01-01', 1.5), "
        "(2, '0xcd', TIMESTAMP '2024-01-02', -2.5), (3, NULL, NULL, NULL)"
    )
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    yield con
    con.close()


# --- (a) arbitrary text: SqlRejected or acceptance, nothing else --------------------------------

SQL_WORDS = [
    "SELECT",
    "select",
    "FROM",
    "dataset",
    "WHERE",
    "WITH",
    "RECURSIVE",
    "AS",
    "UNION",
    "ALL",
    "JOIN",
    "LATERAL",
    "ON",
    "IN",
    "NOT",
    "AND",
    "OR",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "(",
    ")",
    ",",
    ";",
    "*",
    ".",
    "1",
    "2.5",
    "hash",
    "value",
    "x",
    "'x.csv'",
    '"x.csv"',
    "'",
    '"',
    "$$",
    "$t$",
    "E'\\'",
    "--",
    "\n",
    "/*",
    "*/",
    "read_csv",
    "getenv",
    "query",
    "information_schema",
    "main",
    "PRAGMA",
    "COPY",
    "TO",
    "ATTACH",
    "SET",
    "INSTALL",
    "LOAD",
    "DROP",
    "TABLE",
    "INSERT",
    "INTO",
    "VALUES",
    "CALL",
    "EXPLAIN",
    "FROM 'f.parquet'",
    "count(*)",
    "lower(hash)",
    "?",
    "$1",
    "::",
    "[",
    "]",
    "{",
    "}",
    "->",
    "lambda",
    ":",
    "\\",
    "\x00",
    "é",
    "\u00a0",
    "\u2028",
]

ARBITRARY_SQL = st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(SQL_WORDS), max_size=40).map(" ".join),
    st.lists(st.sampled_from(SQL_WORDS), max_size=40).map("".join),
)


@SETTINGS
@given(sql=ARBITRARY_SQL)
def test_arbitrary_text_is_rejected_or_accepted_and_never_crashes(sql: str, duck: Any) -> None:
    started = time.monotonic()
    try:
        check_sql(sql)
    except SqlRejected as exc:
        assert exc.reason in REASONS
        return
    finally:
        assert time.monotonic() - started < 10.0
    # Accepted: DuckDB's own parser must see one SELECT over allowlisted functions and
    # relations (or be unable to parse the text, in which case it cannot run it either).
    assert duckdb_disagreements(duck, sql) in (None, [])


# --- (b) benign SELECTs from a small grammar over `dataset` --------------------------------------

SAFE_TEXT = st.text(alphabet="abcxyz0123456789 _-/:.%", max_size=12).map(lambda s: "'" + s + "'")
NUM_LEAF = st.one_of(
    st.sampled_from(["block_number", "value", "1", "2.5", "0", "-3"]),
    st.integers(min_value=0, max_value=10_000).map(str),
)
NUM_EXPR = st.recursive(
    NUM_LEAF,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(
            st.sampled_from(
                [
                    "abs({})",
                    "round({}, 2)",
                    "floor({})",
                    "coalesce({}, 0)",
                    "CAST({} AS DOUBLE)",
                    "sign({})",
                    "({})::DOUBLE",
                ]
            ),
            inner,
        ).map(lambda t: t[0].format(t[1])),
        st.tuples(inner, inner).map(lambda t: f"greatest({t[0]}, {t[1]})"),
    ),
    max_leaves=6,
)
STR_EXPR = st.recursive(
    st.one_of(st.just("hash"), SAFE_TEXT),
    lambda inner: st.one_of(
        st.tuples(
            st.sampled_from(
                [
                    "lower({})",
                    "upper({})",
                    "trim({})",
                    "md5({})",
                    "reverse({})",
                    "substring({}, 1, 3)",
                    "coalesce({}, 'none')",
                    "replace({}, 'a', 'b')",
                    "regexp_replace({}, '[0-9]', '')",
                ]
            ),
            inner,
        ).map(lambda t: t[0].format(t[1])),
        st.tuples(inner, inner).map(lambda t: f"concat({t[0]}, {t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]} || {t[1]})"),
    ),
    max_leaves=4,
)
BOOL_LEAF = st.one_of(
    st.tuples(NUM_EXPR, st.sampled_from(["<", "<=", "=", "<>", ">", ">="]), NUM_EXPR).map(" ".join),
    STR_EXPR.map(lambda s: f"{s} LIKE '0x%'"),
    STR_EXPR.map(lambda s: f"{s} IS NOT NULL"),
    NUM_EXPR.map(lambda n: f"{n} BETWEEN 0 AND 10"),
    NUM_EXPR.map(lambda n: f"{n} IN (1, 2, 3)"),
    st.just("hash = 'https://example.com/x.csv'"),
    st.just("ts > TIMESTAMP '2024-01-01'"),
)
BOOL_EXPR = st.recursive(
    BOOL_LEAF,
    lambda inner: st.one_of(
        inner.map(lambda b: f"NOT ({b})"),
        st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
    ),
    max_leaves=4,
)


@st.composite
def plain_select(draw: st.DrawFn) -> str:
    exprs = draw(st.lists(st.one_of(NUM_EXPR, STR_EXPR), min_size=1, max_size=3))
    sql = "SELECT " + ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs)) + " FROM dataset"
    if draw(st.booleans()):
        sql += f" WHERE {draw(BOOL_EXPR)}"
    if draw(st.booleans()):
        sql += " ORDER BY 1"
    if draw(st.booleans()):
        sql += f" LIMIT {draw(st.integers(0, 100))}"
    return sql


@st.composite
def aggregate_select(draw: st.DrawFn) -> str:
    agg = draw(
        st.sampled_from(
            [
                "count(*)",
                "sum(value)",
                "avg(value)",
                "max(block_number)",
                "min(ts)",
                "string_agg(hash, ',')",
                "approx_count_distinct(hash)",
                "quantile_cont(value, 0.5)",
                "arg_max(hash, value)",
            ]
        )
    )
    sql = f"SELECT hash, {agg} AS agg FROM dataset"
    if draw(st.booleans()):
        sql += f" WHERE {draw(BOOL_EXPR)}"
    sql += " GROUP BY hash"
    if draw(st.booleans()):
        sql += " HAVING count(*) > 0"
    return sql


@st.composite
def window_select(draw: st.DrawFn) -> str:
    fn = draw(
        st.sampled_from(
            [
                "row_number()",
                "rank()",
                "dense_rank()",
                "lag(value)",
                "lead(value, 1, 0)",
                "first_value(hash)",
                "ntile(2)",
            ]
        )
    )
    return f"SELECT hash, {fn} OVER (PARTITION BY hash ORDER BY ts) AS w FROM dataset"


SIMPLE_QUERY = st.one_of(plain_select(), aggregate_select(), window_select())


@st.composite
def benign_query(draw: st.DrawFn) -> str:
    q = draw(SIMPLE_QUERY)
    shape = draw(st.sampled_from(["plain", "subquery", "cte", "union", "in", "exists", "nested"]))
    if shape == "subquery":
        return f"SELECT * FROM ({q}) AS s"
    if shape == "cte":
        return f"WITH c AS ({q}) SELECT * FROM c"
    if shape == "union":
        return f"({q}) UNION ALL ({q})"
    if shape == "in":
        return f"SELECT * FROM dataset WHERE hash IN (SELECT hash FROM dataset WHERE {draw(BOOL_EXPR)})"
    if shape == "exists":
        return f"SELECT count(*) FROM dataset WHERE EXISTS ({q})"
    if shape == "nested":
        return f"WITH c AS (SELECT * FROM ({q}) AS s) SELECT * FROM (SELECT * FROM c) AS t"
    return q


BENIGN_QUERY = benign_query()


@SETTINGS
@given(sql=BENIGN_QUERY)
def test_generated_benign_selects_are_accepted_and_run(sql: str, duck: Any) -> None:
    check_sql(sql)
    try:
        assert duckdb_disagreements(duck, sql) == []
        duck.execute(sql).fetchall()
    except duckdb.OutOfRangeException:
        pass  # generated constant arithmetic overflowed (e.g. INT32 products): DuckDB refuses it too


# --- (c) hostile fragments stay rejected wherever they are hidden -------------------------------

HOSTILE_RELATIONS: list[tuple[str, str]] = [
    ("read_parquet('s3://bucket/x.parquet')", "TABLE_FUNCTION"),
    ("read_csv('x')", "TABLE_FUNCTION"),
    ("READ_CSV_AUTO('x')", "TABLE_FUNCTION"),
    ("read_json_auto('x')", "TABLE_FUNCTION"),
    ("glob('*')", "TABLE_FUNCTION"),
    ("query('select 1')", "TABLE_FUNCTION"),
    ("duckdb_settings()", "TABLE_FUNCTION"),
    ("pragma_table_info('dataset')", "TABLE_FUNCTION"),
    ("range(10)", "TABLE_FUNCTION"),
    ("'file.csv'", "STRING_RELATION"),
    ('"x.parquet"', "STRING_RELATION"),
    ("'s3://bucket/key'", "STRING_RELATION"),
    ("'/etc/passwd'", "STRING_RELATION"),
    ("information_schema.tables", "DISALLOWED_RELATION"),
    ("main.dataset", "DISALLOWED_RELATION"),
    ("sqlite_master", "DISALLOWED_RELATION"),
    ("pg_catalog.pg_class", "DISALLOWED_RELATION"),
    ("duckdb_tables", "DISALLOWED_RELATION"),
    ("other_table", "DISALLOWED_RELATION"),
    ("(VALUES (1))", "DISALLOWED_SYNTAX"),
]
RELATION_WRAPPERS = [
    "SELECT * FROM {r}",
    "SELECT * FROM (SELECT * FROM {r}) AS s",
    "WITH c AS (SELECT * FROM {r}) SELECT * FROM c",
    "WITH c AS ({q}) SELECT * FROM c, {r}",
    "WITH a AS ({q}), b AS (SELECT * FROM {r}) SELECT * FROM a",
    "({q}) UNION ALL SELECT * FROM {r}",
    "SELECT * FROM dataset WHERE hash IN (SELECT * FROM {r})",
    "SELECT * FROM dataset, {r}",
    "SELECT * FROM dataset JOIN {r} AS x ON true",
    "SELECT * FROM ({q}) AS s LEFT JOIN {r} AS x ON true",
    "SELECT (SELECT count(*) FROM {r})",
    "SELECT * FROM dataset WHERE EXISTS (SELECT 1 FROM {r})",
    "SELECT * FROM ({q}) AS s WHERE EXISTS (SELECT * FROM (SELECT * FROM {r}) AS t)",
]
HOSTILE_EXPRESSIONS: list[tuple[str, str]] = [
    ("getenv('HOME')", "DISALLOWED_FUNCTION"),
    ("GetEnv('HOME')", "DISALLOWED_FUNCTION"),
    ("current_setting('threads')", "DISALLOWED_FUNCTION"),
    ("version()", "DISALLOWED_FUNCTION"),
    ("current_database()", "DISALLOWED_FUNCTION"),
    ("current_schema", "DISALLOWED_FUNCTION"),
    ("nextval('s')", "DISALLOWED_FUNCTION"),
    ("'HOME'.getenv()", "DISALLOWED_FUNCTION"),
    ("$1", "DISALLOWED_SYNTAX"),
    ("(SELECT count(*) FROM read_csv('x'))", "TABLE_FUNCTION"),
    ("(SELECT 1 FROM 'x.csv')", "STRING_RELATION"),
    ("(SELECT max(table_name) FROM information_schema.tables)", "DISALLOWED_RELATION"),
]
EXPRESSION_WRAPPERS = [
    "SELECT {e}",
    "SELECT {e} FROM dataset",
    "SELECT * FROM dataset WHERE hash = {e}",
    "SELECT * FROM (SELECT {e} AS x FROM dataset) AS s",
    "WITH c AS (SELECT {e} AS x) SELECT * FROM c",
    "({q}) UNION SELECT {e}",
    "SELECT * FROM dataset WHERE hash IN (SELECT {e})",
    "SELECT * FROM dataset WHERE hash IN ({e}, 'a')",
    "SELECT sum(value) OVER (PARTITION BY {e}) FROM dataset",
    "SELECT CASE WHEN value > 0 THEN {e} END FROM dataset",
    "SELECT * FROM ({q}) AS s ORDER BY {e}",
    "SELECT coalesce({e}, 'x') FROM dataset",
]
HOSTILE_SUFFIXES = [
    "; DROP TABLE dataset",
    "; PRAGMA version",
    ";SELECT 1",
    "; ATTACH 'x.db'",
    " -- c\n; INSTALL httpfs",
    "; COPY dataset TO 'out.csv'",
]

HIDDEN_HOSTILE = st.one_of(
    st.tuples(st.sampled_from(RELATION_WRAPPERS), st.sampled_from(HOSTILE_RELATIONS), BENIGN_QUERY).map(
        lambda t: (t[0].format(r=t[1][0], q=t[2]), t[1][1])
    ),
    st.tuples(st.sampled_from(EXPRESSION_WRAPPERS), st.sampled_from(HOSTILE_EXPRESSIONS), BENIGN_QUERY).map(
        lambda t: (t[0].format(e=t[1][0], q=t[2]), t[1][1])
    ),
    st.tuples(BENIGN_QUERY, st.sampled_from(HOSTILE_SUFFIXES)).map(lambda t: (t[0] + t[1], "MULTIPLE_STATEMENTS")),
)


@SETTINGS
@given(case=HIDDEN_HOSTILE)
def test_hostile_fragment_inside_benign_query_is_rejected(case: tuple[str, str]) -> None:
    sql, reason = case
    with pytest.raises(SqlRejected) as info:
        check_sql(sql)
    assert info.value.reason == reason
