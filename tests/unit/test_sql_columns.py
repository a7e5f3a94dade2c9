"""Column lineage for the PII audit (trace_platform.core.sql_columns): a classified column
read through any rename is reported, and what cannot be resolved reads every column."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from tests.unit.test_sql_corpus import chain_table, corpus_queries
from trace_platform.core.sql_columns import column_refs
from trace_platform.core.sql_gate import check_sql

PII = ["email", "ssn"]
BOTH = ("email", "ssn")
COLUMNS = chain_table(1, 1).schema.names


def classified(sql: str) -> tuple[str, ...]:
    return column_refs(check_sql(sql)).classified(PII)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # the hole: a column list renames the relation's columns by position
        ("SELECT x FROM dataset t(a, b, x)", BOTH),
        ("SELECT t.x FROM dataset AS t(a, b, x) WHERE a > 0", BOTH),
        ("SELECT count(*) FROM dataset t(a, b, x) WHERE x LIKE '%@%'", BOTH),
        ("WITH c AS (SELECT * FROM dataset) SELECT x FROM c t(a, b, x)", BOTH),
        # CTEs, CTE column lists, subqueries and aliases keep the source name in the query
        ("WITH c(a, x) AS (SELECT block_number, email FROM dataset) SELECT x FROM c", ("email",)),
        ("WITH c(a, x) AS (SELECT block_number, ssn FROM dataset) SELECT a FROM c", ("ssn",)),
        ("WITH c AS (SELECT email AS x FROM dataset), d AS (SELECT x AS y FROM c) SELECT y FROM d", ("email",)),
        ("SELECT y FROM (SELECT x AS y FROM (SELECT email AS x FROM dataset) s) t", ("email",)),
        ("SELECT y FROM (SELECT ssn FROM dataset) t(y)", ("ssn",)),
        ("SELECT e FROM (SELECT upper(email) AS e FROM dataset)", ("email",)),
        (
            "WITH RECURSIVE r(n, e) AS (SELECT 1, email FROM dataset UNION ALL SELECT n + 1, e FROM r WHERE n < 2) "
            "SELECT n FROM r",
            ("email",),
        ),
        # read only in a predicate, a join, a grouping, an ordering or a window
        ("SELECT block_number FROM dataset WHERE ssn = '1'", ("ssn",)),
        ("SELECT a.block_number FROM dataset a JOIN dataset b ON a.email = b.email", ("email",)),
        ("SELECT count(*) FROM dataset a JOIN dataset b USING (ssn)", ("ssn",)),
        ("SELECT count(*) FROM dataset GROUP BY email", ("email",)),
        ("SELECT block_number FROM dataset ORDER BY ssn", ("ssn",)),
        ("SELECT row_number() OVER (PARTITION BY email) FROM dataset", ("email",)),
        ("SELECT block_number FROM dataset QUALIFY row_number() OVER (ORDER BY ssn) = 1", ("ssn",)),
        ("SELECT count(*) FILTER (WHERE email IS NULL) FROM dataset", ("email",)),
        ("SELECT block_number FROM dataset WHERE EXISTS (SELECT 1 FROM dataset d WHERE d.ssn > '')", ("ssn",)),
        (
            "SELECT block_number FROM dataset WHERE block_number IN (SELECT block_number FROM dataset WHERE email)",
            ("email",),
        ),
        # lambdas, struct access, unnest, lists
        ("SELECT list_transform([1], lambda i: i || email) FROM dataset", ("email",)),
        ("SELECT list_filter(tags, lambda t: t = ssn) FROM dataset", ("ssn",)),
        ("SELECT s.email FROM (SELECT {'email': 1} AS s)", ("email",)),
        ("SELECT info.ssn FROM dataset", ("ssn",)),
        ("SELECT (info).email FROM dataset", ("email",)),
        ("SELECT unnest([email]) FROM dataset", ("email",)),
        ("SELECT struct_pack(e := ssn) FROM dataset", ("ssn",)),
        # quoted and differently cased names are the same column to DuckDB
        ('SELECT "EMAIL" FROM dataset', ("email",)),
        ("SELECT d.Ssn FROM dataset d", ("ssn",)),
        # everything: *, t.*, EXCLUDE/REPLACE, relation as a value, NATURAL joins, FROM-first
        ("SELECT * FROM dataset", BOTH),
        ("SELECT t.* FROM dataset t", BOTH),
        ("SELECT * EXCLUDE (email) FROM dataset", BOTH),
        ("SELECT * REPLACE (1 AS ssn) FROM dataset", BOTH),
        ("FROM dataset", BOTH),
        ("TABLE dataset", BOTH),
        ("SELECT t FROM dataset t", BOTH),
        ("SELECT to_json(d) FROM dataset d", BOTH),
        ("SELECT x.t FROM (SELECT t FROM dataset t) x", BOTH),
        ("SELECT count(*) FROM dataset a NATURAL JOIN (SELECT 'x' AS email) b", BOTH),
        ("WITH c AS (FROM dataset) SELECT block_number FROM c", BOTH),
        ("SELECT count(DISTINCT *) FROM dataset", BOTH),
        # nothing classified
        ("SELECT block_number FROM dataset", ()),
        ("SELECT count(*) FROM dataset", ()),
        ("SELECT 'email' AS label, block_number FROM dataset", ()),
        ("WITH c(a) AS (SELECT block_number FROM dataset) SELECT a FROM c", ()),
    ],
)
def test_classified_columns_read(sql: str, expected: tuple[str, ...]) -> None:
    assert classified(sql) == expected


@pytest.fixture(scope="module")
def chain_duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    con.register("chain_rows", chain_table())
    con.execute("CREATE TABLE chain AS SELECT * FROM chain_rows")
    con.unregister("chain_rows")
    yield con
    con.close()


@pytest.mark.parametrize("sql", corpus_queries())
def test_a_column_not_reported_is_not_needed(sql: str, chain_duck: duckdb.DuckDBPyConnection) -> None:
    """DuckDB as the oracle: with every column the lineage does not report removed from
    ``dataset``, each corpus query still binds and runs. A column it needs but the audit
    missed would make DuckDB fail."""
    refs = column_refs(check_sql(sql))
    if refs.all_columns:
        return
    kept = [c for c in COLUMNS if c.lower() in refs.names] or ["block_number AS zz_unrelated"]
    chain_duck.execute(f"CREATE OR REPLACE TEMP VIEW dataset AS SELECT {', '.join(kept)} FROM chain")
    chain_duck.execute(sql).fetchall()


def test_the_oracle_notices_a_missing_column(chain_duck: duckdb.DuckDBPyConnection) -> None:
    chain_duck.execute("CREATE OR REPLACE TEMP VIEW dataset AS SELECT block_number FROM chain")
    with pytest.raises(duckdb.BinderException):
        chain_duck.execute("SELECT block_number FROM dataset WHERE miner > ''").fetchall()
