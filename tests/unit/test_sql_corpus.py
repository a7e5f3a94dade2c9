"""The benign corpus (tests/unit/sql_corpus/benign.sql): realistic chain analytics that the
gate must accept and that must run on a real hardened DuckDB over a small Parquet version,
so the corpus is real SQL and the gate's allowlist keeps up with what analysts write."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from tests.datasets import parquet_bytes
from tests.unit.test_sql_gate import duckdb_disagreements
from trace_platform.adapters.duckdb.hardened import DuckDBLimits, HardenedDatabase, PinnedFiles
from trace_platform.core.sql_gate import check_sql

CORPUS = Path(__file__).parent / "sql_corpus" / "benign.sql"
TRANSFER = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


def corpus_queries() -> list[str]:
    """The corpus's queries: blank-line separated, comment-only chunks dropped."""
    chunks = [c.strip() for c in CORPUS.read_text().split("\n\n")]
    return [c for c in chunks if any(line and not line.startswith("--") for line in c.splitlines())]


def _address(i: int) -> bytes:
    return (0xA0 + i).to_bytes(20, "big")


def chain_table(blocks: int = 20, per_block: int = 3) -> pa.Table:
    """Blocks, transactions and logs columns in one relation, as chain_sync stores them."""
    rows: dict[str, list[object]] = {}
    start = dt.datetime(2024, 1, 1)
    for b in range(blocks):
        for t in range(per_block):
            n = b * per_block + t
            event = "Transfer" if n % 3 else "Approval"
            wei = (n + 1) * 10**15
            values: dict[str, object] = {
                "block_number": b,
                "block_hash": b.to_bytes(32, "big"),
                "block_timestamp": int(start.timestamp()) + 12 * b,
                "block_time": start + dt.timedelta(seconds=12 * b),
                "miner": f"0x{b % 4:040x}",
                "gas_used": (b * 7919) % 30_000_000 + 21_000,
                "gas_limit": 30_000_000,
                "base_fee_per_gas": 10**9 + b,
                "transaction_hash": n.to_bytes(32, "big"),
                "transaction_index": t,
                "from_address": _address(n % 5),
                "to_address": None if n % 7 == 0 else _address((n + 1) % 5),
                "value": wei / 1e18,
                "value_string": str(wei),
                "input": bytes.fromhex("a9059cbb") + n.to_bytes(32, "big"),
                "nonce": n // 5,
                "gas_price": 2 * 10**9 + n,
                "success": n % 11 != 0,
                "log_index": t,
                "address": _address(10 + n % 3),
                "topic0": bytes.fromhex(TRANSFER[2:]),
                "topic1": None if n % 4 == 0 else _address(n % 5).rjust(32, b"\0"),
                "data": wei.to_bytes(32, "big"),
                "topics": [TRANSFER[:10], f"0x{n:08x}"],
                "decoded": json.dumps(
                    {
                        "event": event,
                        "args": {"from": f"0x{n % 5:040x}", "to": f"0x{(n + 1) % 5:040x}", "value": str(wei)},
                        "tags": ["erc20"] * (n % 3),
                    }
                ),
                "chain_id": 1,
            }
            for key, value in values.items():
                rows.setdefault(key, []).append(value)
    return pa.table(rows)


@pytest.fixture(scope="module")
def chain_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardenedDatabase]:
    """A pinned hardened database whose ``dataset`` is one Parquet object of chain rows."""
    root = tmp_path_factory.mktemp("corpus")
    version = root / "datasets" / "v-corpus"
    version.mkdir(parents=True)
    path = version / "part-0.parquet"
    path.write_bytes(parquet_bytes(chain_table()))
    pinned = PinnedFiles((f"{version}/",), (str(path),), (path.stat().st_size,))
    db = HardenedDatabase(root / "work", DuckDBLimits("256MB", 1), pinned)
    yield db
    db.close()


def test_the_corpus_is_large_and_distinct() -> None:
    queries = corpus_queries()
    assert len(queries) >= 150
    assert len(set(queries)) == len(queries)


@pytest.mark.parametrize("sql", corpus_queries())
def test_corpus_query_passes_the_gate_and_runs(sql: str, chain_db: HardenedDatabase) -> None:
    check_sql(sql)
    conn = chain_db.connect()
    try:
        conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def parser_only() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(":memory:")
    yield con
    con.close()


@pytest.mark.parametrize("sql", corpus_queries())
def test_what_duckdb_calls_in_a_corpus_query_is_allowlisted(sql: str, parser_only: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's own parser (json_serialize_sql) names only allowlisted functions: the gate's
    reading of the corpus and DuckDB's agree."""
    assert duckdb_disagreements(parser_only, sql) == []
