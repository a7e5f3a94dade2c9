"""The gate's shape memo: texts differing only in number values share a verdict, nothing
else does, and a number value never flips a verdict of the gate itself."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlglot import TokenType
from sqlglot.dialects.dialect import Dialect

from tests.unit.test_sql_gate import BENIGN, HOSTILE
from trace_platform.core import sql_gate
from trace_platform.core.sql_gate import SqlRejected, check_sql, sql_sha256, sql_shape
from trace_platform.servers.query import gate
from trace_platform.servers.query.gate import GateMemo, SqlDenied

_DUCKDB = Dialect.get_or_raise("duckdb")


def _renumbered(sql: str, rng: random.Random) -> str:
    """``sql`` with every number literal the tokenizer sees given another value."""
    try:
        tokens = _DUCKDB.tokenize(sql)
    except Exception:
        return sql
    out, last = [], 0
    for token in tokens:
        if token.token_type is TokenType.NUMBER and sql[token.start : token.end + 1] == token.text:
            out += [sql[last : token.start], str(rng.randrange(0, 10**9))]
            last = token.end + 1
    return "".join(out) + sql[last:]


def _verdict(sql: str) -> str:
    try:
        check_sql(sql)
    except SqlRejected as exc:
        return exc.reason
    return "ok"


def test_number_values_share_a_shape_and_other_changes_do_not() -> None:
    point = "SELECT miner FROM dataset WHERE block_number = {}"
    assert sql_shape(point.format(5)) == sql_shape(point.format(123456789))
    assert sql_shape(point.format(5)) != sql_shape(point.format("'5'"))
    assert sql_shape("SELECT a FROM dataset WHERE h = 'x'") != sql_shape("SELECT a FROM dataset WHERE h = 'y'")
    assert sql_shape("SELECT a FROM dataset") != sql_shape("SELECT b FROM dataset")
    assert sql_shape("SELECT a FROM dataset") != sql_shape("SELECT a FROM other")
    assert sql_shape("SELECT 1 FROM dataset") != sql_shape("SELECT 1 /* x */ FROM dataset")
    assert sql_shape("SELECT 1 FROM dataset\x01") is None  # fails the text checks: no shape


@pytest.mark.parametrize("sql", [q for q, _ in HOSTILE] + BENIGN)
def test_a_number_value_never_changes_the_gates_verdict(sql: str) -> None:
    rng = random.Random(sql_sha256(sql))
    for _ in range(3):
        variant = _renumbered(sql, rng)
        assert _verdict(variant) == _verdict(sql), variant
        if sql_shape(sql) is not None:
            assert sql_shape(variant) == sql_shape(sql)


async def test_memo_parses_a_shape_once_and_rejections_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def counting_check(sql: str, **options: Any) -> object:
        calls.append(sql)
        return sql_gate.check_sql(sql, **options)

    monkeypatch.setattr(gate, "check_sql", counting_check)
    memo = GateMemo()
    first = await memo.check("SELECT miner FROM dataset WHERE block_number = 1")
    second = await memo.check("SELECT miner FROM dataset WHERE block_number = 2")
    assert len(calls) == 1 and first.refs == second.refs
    assert first.sha256 != second.sha256  # audit still tells the texts apart
    await memo.check("SELECT miner FROM dataset WHERE miner = '0x1'")
    assert len(calls) == 2  # a string is part of the shape
    for _ in range(2):
        with pytest.raises(SqlDenied) as err:
            await memo.check("SELECT * FROM read_parquet('/etc/passwd') WHERE 1 = 1")
        assert err.value.reason == "TABLE_FUNCTION"
    with pytest.raises(SqlDenied):
        await memo.check("SELECT * FROM read_parquet('/etc/passwd') WHERE 1 = 2")
    assert len(calls) == 5  # rejected texts are judged afresh, numbers or not
