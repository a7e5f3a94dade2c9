"""The gate's shape memo: texts differing only in number values share a verdict, nothing
else does, and a number value never flips a verdict of the gate itself."""

from __future__ import annotations

import random
import re
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
    assert sql_shape("SELECT a1 FROM dataset") != sql_shape("SELECT a2 FROM dataset")
    assert sql_shape("SELECT 1e5 FROM dataset") != sql_shape("SELECT 1e6 FROM dataset")
    assert sql_shape("SELECT a FROM dataset WHERE x < 1.5") == sql_shape("SELECT a FROM dataset WHERE x < 22.25")
    assert sql_shape("SELECT a FROM dataset WHERE x < 1.5") != sql_shape("SELECT a FROM dataset WHERE x < 1e5")


# Pieces of plain texts (and a few that are not plain): number forms whose digits are not
# all a number token on their own, identifiers with digits, sigils and casts.
_PIECES = [
    *("SELECT", "FROM", "WHERE", "LIMIT", "dataset", "a", "b1", "x_2", "e", "E", "_", "int", "DECIMAL"),
    *("1", "07", "123", "1.5", ".5", "5.", "1e5", "1E-3", "0x1f", "0b1", "1_000", "9" * 30),
    *("=", "<", ">", "+", "-", "*", "/", "%", ",", "(", ")", "[", "]", "{", "}", ".", "::", ":", ";"),
    *("@", "?", "!", "|", "&", "^", "~", "$", "#", "'", '"', "--", "/*", "*/"),
]
_DIGITS = re.compile(r"[0-9]+")


def test_a_plain_key_is_shared_only_by_texts_whose_token_keys_agree() -> None:
    """Renumber any digit run at all: whenever two texts share a plain key, the tokenizer's
    key agrees (so the fast path never merges what the tokenizer tells apart)."""
    rng = random.Random(12)
    merged = 0
    for _ in range(3000):
        sql = "".join(rng.choice(_PIECES) + rng.choice(["", " ", "  ", "\n"]) for _ in range(rng.randrange(2, 12)))
        variant = _DIGITS.sub(lambda m: rng.choice(["0", "1", str(rng.randrange(0, 10 ** rng.randrange(1, 12)))]), sql)
        plain = sql_gate._plain_shape(sql)
        if plain is not None and plain == sql_gate._plain_shape(variant):
            merged += 1
            assert sql_gate._token_shape(sql) == sql_gate._token_shape(variant), (sql, variant)
    assert merged > 300  # the property was exercised, not vacuously true


@pytest.mark.parametrize("sql", [q for q, _ in HOSTILE] + BENIGN)
def test_a_number_value_never_changes_the_gates_verdict(sql: str) -> None:
    rng = random.Random(sql_sha256(sql))
    for _ in range(3):
        variant = _renumbered(sql, rng)
        assert _verdict(variant) == _verdict(sql), variant
        # The tokenizer's key masks every number; a plain key only integers and decimals
        # (the test below shows it never merges more than the tokenizer's would).
        if sql_shape(sql) is not None and sql_gate._plain_shape(sql) is None:
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
