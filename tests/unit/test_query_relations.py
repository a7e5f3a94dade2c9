"""Relation names of a query over several datasets: their checks, the gate allowing exactly
those names and CTEs, the gate's memo keyed by the set of names, and the views they become."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trace_platform.adapters.duckdb.hardened import view_statements
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.relations import MAX_RELATIONS, named_relations, relation_name, requested
from trace_platform.core.sql_gate import SqlRejected, check_sql
from trace_platform.servers.query.gate import GateMemo, SqlDenied

TWO = frozenset({"txs", "logs"})


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM txs JOIN logs USING (tx_hash)",
        "SELECT * FROM TXS t, Logs l WHERE t.a = l.a",  # case-insensitive, as DuckDB resolves them
        'SELECT * FROM "txs"',
        "WITH x AS (SELECT * FROM txs) SELECT * FROM x JOIN logs USING (a)",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r, txs",
        "SELECT (SELECT count(*) FROM logs) FROM txs",
        "SELECT * FROM txs WHERE a IN (SELECT a FROM logs)",
    ],
)
def test_the_gate_allows_the_given_names_and_ctes(sql: str) -> None:
    check_sql(sql, allowed_relations=TWO)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM dataset",  # the default name is not implicitly allowed
        "SELECT * FROM txs JOIN blocks USING (a)",
        "SELECT * FROM main.txs",
        "SELECT * FROM memory.main.logs",
        "SELECT * FROM information_schema.tables",
        "SELECT * FROM duckdb_settings",
        "WITH x AS (SELECT * FROM secret) SELECT * FROM x",  # a CTE's body is checked too
        "SELECT * FROM (SELECT * FROM other) s",
        "WITH main AS (SELECT 1) SELECT * FROM main",  # system names never resolve, CTE or not
    ],
)
def test_the_gate_refuses_every_other_relation(sql: str) -> None:
    with pytest.raises(SqlRejected) as exc:
        check_sql(sql, allowed_relations=TWO)
    assert exc.value.reason == "DISALLOWED_RELATION"


def test_a_cte_is_visible_only_where_sql_scopes_it() -> None:
    with pytest.raises(SqlRejected) as exc:  # x is defined inside the subquery only
        check_sql("SELECT * FROM (WITH x AS (SELECT * FROM txs) SELECT * FROM x) s, x", allowed_relations=TWO)
    assert exc.value.reason == "DISALLOWED_RELATION"


@pytest.mark.parametrize("name", ["txs", "_x", "Logs", "a1_b2", "dataset", "x" * 63])
def test_good_relation_names_fold_to_lowercase(name: str) -> None:
    assert relation_name(name) == name.lower()


@pytest.mark.parametrize(
    "name",
    ["", "1a", "a-b", "a.b", "a b", 'a"b', "a;b", "x" * 64, "é", "select", "FROM", "join", "main", "temp",
     "system", "memory", "duckdb_tables", "pg_catalog", "sqlite_master", "pragma_x", "information_schema"],
)  # fmt: skip
def test_bad_relation_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        relation_name(name)
    assert exc.value.reason == "RELATION_NAME_INVALID"


def test_relation_sets_are_unique_bounded_and_ordered() -> None:
    assert named_relations([("B", 1), ("a", 2)]) == (("b", 1), ("a", 2))
    for pairs, reason in (
        ([("a", 1), ("A", 2)], "RELATION_NAME_DUPLICATE"),
        ([], "DATASET_REQUIRED"),
        ([(f"r{i}", i) for i in range(MAX_RELATIONS + 1)], "TOO_MANY_DATASETS"),
    ):
        with pytest.raises(InvalidArgument) as exc:
            named_relations(pairs)
        assert exc.value.reason == reason
    assert len(named_relations([(f"r{i}", i) for i in range(MAX_RELATIONS)])) == MAX_RELATIONS


def test_the_shorthand_is_the_relation_dataset_and_never_with_the_list() -> None:
    assert requested("u1", [], "dataset_uuid") == (("dataset", "u1"),)
    assert requested("", [("t", "u1")], "dataset_uuid") == [("t", "u1")]
    with pytest.raises(InvalidArgument) as exc:
        requested("u1", [("t", "u2")], "dataset_uuid")
    assert exc.value.reason == "DATASETS_AMBIGUOUS"


async def test_the_gate_memo_holds_a_verdict_for_one_set_of_names_only() -> None:
    memo = GateMemo()
    sql = "SELECT * FROM txs JOIN logs USING (a) WHERE block = 7"
    await memo.check(sql, TWO)
    await memo.check(sql.replace("7", "8"), TWO)  # the accepted shape, memoized
    for other in (frozenset({"txs"}), frozenset({"logs", "dataset"}), frozenset({"dataset"})):
        with pytest.raises(SqlDenied) as exc:
            await memo.check(sql, other)
        assert exc.value.reason == "DISALLOWED_RELATION"
        assert ", ".join(sorted(other)) in exc.value.message
        with pytest.raises(SqlDenied):
            await memo.check(sql.replace("7", "9"), other)
    with pytest.raises(SqlDenied):  # the default: the one relation `dataset`
        await memo.check(sql)


def test_views_cover_each_relations_own_objects(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    paths = []
    for i, n in enumerate((2, 3, 4)):
        path = root / f"p{i}.parquet"
        pq.write_table(pa.table({"v": list(range(n))}), path)
        paths.append(str(path))
    conn = duckdb.connect()
    for statement in view_statements(paths, (("a", 1), ("b", 2)), temp=True):
        conn.execute(statement)
    assert conn.execute("SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)").fetchall() == [(2, 7)]
    [single] = view_statements(paths, (), temp=True)
    conn.execute(single)
    assert conn.execute("SELECT count(*) FROM dataset").fetchall() == [(9,)]
    for bad in ((("a", 1),), (("a", 0), ("b", 3))):
        with pytest.raises(ValueError):
            view_statements(paths, bad, temp=True)


def test_the_keyword_list_is_duckdbs_own() -> None:
    """Every keyword DuckDB does not leave unreserved is refused as a relation name: the
    embedded list drifts from the installed DuckDB only with a failing test."""
    from trace_platform.core import relations

    rows = duckdb.sql("SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'").fetchall()
    assert {k for (k,) in rows} == relations._KEYWORDS
