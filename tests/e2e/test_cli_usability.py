"""`trace` as a user runs it against a real `trace lite up` (issue 14, items 6 and 7):
wrong use answered with its reason, hint and exit code; binary columns as 0x hex;
`trace query --format table|json|csv|parquet [--output FILE]`, csv and parquet streamed
whole through QueryArrow past the 10,000-row cap of Query."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.anvil import free_port
from tests.datasets import write_dataset
from tests.e2e.conftest import spawn, wait_for_line
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.core.config import LITE_ORG_ID, Settings
from trace_platform.gen.trace.v1 import chain_sync_pb2

ROWS = 70_000  # past Query's 10,000-row cap and past one 65,536-row Arrow batch
DATASET = "fixture.blocks"


def trace(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trace_platform", *args], env=env, capture_output=True, text=True, timeout=120
    )


def blocks(n: int) -> pa.Table:
    return pa.table(
        {
            "block_number": pa.array(range(n), pa.int64()),
            "hash": pa.array([(i * 2654435761).to_bytes(32, "big") for i in range(n)], pa.binary()),
            "miner": pa.array([bytes([i % 256]) * 20 if i % 5 else None for i in range(n)], pa.binary()),
            "gas_used": pa.array([(i * 7919) % 30_000_000 for i in range(n)], pa.int64()),
        }
    )


@dataclass(frozen=True)
class Lite:
    env: dict[str, str]
    data_dir: Path
    pid: int
    rows: pa.Table


@pytest.fixture
async def lite(settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[str]]) -> AsyncIterator[Lite]:
    data_dir = tmp_path / "lite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DATA_DIR=str(data_dir),
        TRACE_DATABASE_URL=settings.database_url or "",
        # A pool nothing answers on: jobs can be applied, their ranges fail.
        TRACE_RPC_POOL_NOWHERE_URL=f"http://127.0.0.1:{free_port()}",
    )
    proc = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
    procs.append(proc)
    env["TRACE_ADDR"] = wait_for_line(proc, r"trace lite is up on (\S+)", timeout=60, stream="stdout")
    rows = blocks(ROWS)
    store = LocalObjectStore([data_dir / "objects"])
    half = ROWS // 2
    ds = write_dataset(store, f"file://{data_dir / 'objects'}", [rows.slice(0, half), rows.slice(half)])
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await DatasetRepository(pool).publish(LITE_ORG_ID, DATASET, ds.publication)
    finally:
        await pool.close()
    yield Lite(env, data_dir, proc.pid, rows)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


def hex0x(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def test_wrong_use_against_a_running_lite(lite: Lite) -> None:
    env = lite.env
    second = trace("lite", "up", "--listen", "127.0.0.1:0", env=env)
    assert (second.returncode, second.stdout) == (1, "")
    assert second.stderr == (
        f"error: data directory {lite.data_dir} is in use by another `trace lite up` (pid {lite.pid})\n"
        "hint: stop it, or use another --data-dir / TRACE_DATA_DIR\n"
    )

    unknown = trace("status", "nope", env=env)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == f"error: CHAIN_SYNC_NOT_FOUND: no chain_sync job 'nope' in org {LITE_ORG_ID}\n"
    assert trace("status", "nope", "--json", env=env).returncode == 1

    refused = trace("query", "--dataset", DATASET, "SELECT * FROM read_csv('/etc/passwd')", env=env)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: TABLE_FUNCTION: ") and refused.stderr.count("TABLE_FUNCTION") == 1
    assert "read_csv" not in refused.stderr

    missing = trace("query", "--dataset", "fixture.nope", "--format", "csv", "SELECT 1 FROM dataset", env=env)
    assert missing.returncode == 1 and missing.stderr.startswith("error: DATASET_NOT_FOUND: ")

    nobody = f"127.0.0.1:{free_port()}"
    down = trace("status", "--addr", nobody, env=env)
    assert (down.returncode, down.stdout) == (1, "")
    first, hint = down.stderr.splitlines()
    assert first.startswith("error: UNAVAILABLE: ") and first.count("UNAVAILABLE") == 1
    assert hint == f"hint: is `trace lite up` running? (address {nobody}; set --addr or TRACE_ADDR)"

    bare = trace("status", "--addr", "127.0.0.1", env=env)
    assert bare.returncode == 2
    assert "Invalid value for '--addr': '127.0.0.1' has no port: use host:port, e.g. 127.0.0.1:50051" in bare.stderr


def test_status_json_has_numbers(lite: Lite, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(
        "kind: chain_sync\nname: far\nchain_id: 31337\n"
        "mode:\n  kind: fixed_target\n  from_block: 4000000000\n  to_block: 4000000100\n"
        "streams:\n  blocks:\n    cryo_dataset_name: blocks\n    rpc_pool: nowhere\n    chunk_size: 50\n"
        "    max_inflight: 1\n"
    )
    applied = trace("apply", "-f", str(spec), env=lite.env)
    assert applied.returncode == 0, applied.stderr
    done = trace("status", "far", "--json", env=lite.env)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)["jobs"][0]
    assert (job["chain_id"], job["from_block"], job["to_block"]) == (31337, 4_000_000_000, 4_000_000_100)
    stream = job["streams"][0]
    for field in ("cursor", "in_flight", "completed_ranges", "completed_blocks"):
        assert type(stream[field]) is int, (field, stream)
    assert stream["cursor"] >= 4_000_000_000
    # Every int64 the message has, however deep, is a number.
    assert not strings_for_int64(chain_sync_pb2.ChainSyncStatus.DESCRIPTOR, job)


def strings_for_int64(descriptor: Any, doc: dict[str, Any]) -> list[str]:
    bad = []
    for field in descriptor.fields:
        values = doc.get(field.name)
        values = values if isinstance(values, list) else [values]
        if field.type in (3, 4, 6, 16, 18):
            bad += [field.name for v in values if v is not None and type(v) is not int]
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            bad += [name for v in values if isinstance(v, dict) for name in strings_for_int64(field.message_type, v)]
    return bad


def test_query_formats_hex_and_streaming(lite: Lite, tmp_path: Path) -> None:
    env, rows = lite.env, lite.rows
    first = rows.slice(0, 3).to_pylist()

    table = trace("query", "--dataset", DATASET, "SELECT block_number, hash FROM dataset ORDER BY 1 LIMIT 3", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[2].split() == ["0", "|", hex0x(first[0]["hash"])]
    assert lines[-1] == "(3 rows)" and "\\x" not in table.stdout

    sql_all = "SELECT block_number, hash, miner, gas_used FROM dataset ORDER BY block_number"
    as_json = trace("query", "--dataset", DATASET, "--format", "json", "--limit", "3", sql_all, env=env)
    doc = json.loads(as_json.stdout)
    assert doc["rows"] == [[r["block_number"], hex0x(r["hash"]), hex0x(r["miner"]), r["gas_used"]] for r in first]
    assert doc["truncated"] is True and [c["name"] for c in doc["columns"]] == rows.column_names

    # --json is --format json; --output writes the same document to a file.
    out_json = tmp_path / "out.json"
    to_file = trace("query", "--dataset", DATASET, "--json", "--limit", "3", "-o", str(out_json), sql_all, env=env)
    assert to_file.returncode == 0 and to_file.stdout == "" and json.loads(out_json.read_text()) == doc

    # Query stops at its cap; csv streams the whole result through QueryArrow.
    capped = trace("query", "--dataset", DATASET, "--format", "json", "--limit", "20000", sql_all, env=env)
    assert len(json.loads(capped.stdout)["rows"]) == 10_000
    as_csv = trace("query", "--dataset", DATASET, "--format", "csv", sql_all, env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    got = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    want = [
        {
            "block_number": str(r["block_number"]),
            "hash": hex0x(r["hash"]),
            "miner": hex0x(r["miner"]) or "",
            "gas_used": str(r["gas_used"]),
        }
        for r in rows.to_pylist()
    ]
    assert got == want

    # A reader that leaves early (| head) is no error of ours: no traceback.
    piped = subprocess.run(
        f"{sys.executable} -m trace_platform query --dataset {DATASET} --format csv '{sql_all}' | head -2",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout.splitlines() == as_csv.stdout.splitlines()[:2]
    assert "Traceback" not in piped.stderr and "Error" not in piped.stderr, piped.stderr

    limited = tmp_path / "first.csv"
    part = trace(
        "query", "--dataset", DATASET, "--format", "csv", "--limit", "15000", "-o", str(limited), sql_all, env=env
    )
    assert part.returncode == 0 and part.stderr == f"15000 rows written to {limited}\n"
    assert list(csv.DictReader(limited.open())) == want[:15000]

    out = tmp_path / "all.parquet"
    whole = trace("query", "--dataset", DATASET, "--format", "parquet", "--output", str(out), sql_all, env=env)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == "" and whole.stderr == f"{ROWS} rows written to {out}\n"
    back = pq.read_table(out)
    assert back.num_rows == ROWS
    assert back.to_pylist() == rows.to_pylist()
    assert pq.ParquetFile(out).metadata.num_row_groups >= 2  # written batch by batch

    empty = tmp_path / "empty.parquet"
    none = trace(
        "query",
        "--dataset",
        DATASET,
        "--format",
        "parquet",
        "-o",
        str(empty),
        sql_all.replace("ORDER", "WHERE false ORDER"),
        env=env,
    )
    assert none.returncode == 0, none.stderr
    assert pq.read_table(empty).num_rows == 0 and pq.read_table(empty).column_names == rows.column_names

    bad = tmp_path / "bad.parquet"
    failed = trace(
        "query",
        "--dataset",
        DATASET,
        "--format",
        "parquet",
        "-o",
        str(bad),
        # Fails at run time, after the first batch left: the partial file goes too.
        "SELECT CASE WHEN block_number < 69000 THEN block_number"
        " ELSE CAST('x' || block_number AS BIGINT) END AS n FROM dataset",
        env=env,
    )
    assert failed.returncode == 1 and failed.stderr.startswith("error: ")
    assert not bad.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bad.parquet")]


async def test_query_over_two_named_datasets(lite: Lite, settings: Settings) -> None:
    """`trace query --dataset blocks=NAME --dataset tags=NAME`: a join, in json and csv; a
    relation not given is refused naming the ones that are; a relation given twice is wrong use."""
    store = LocalObjectStore([lite.data_dir / "objects"])
    tags = pa.table({"block_number": pa.array([5, 1, 2], pa.int64()), "tag": ["c", "a", "b"]})
    ds = write_dataset(store, f"file://{lite.data_dir / 'objects'}", [tags])
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await DatasetRepository(pool).publish(LITE_ORG_ID, "fixture.tags", ds.publication)
    finally:
        await pool.close()
    env = lite.env
    sql = "SELECT t.tag, b.gas_used FROM tags t JOIN blocks b USING (block_number) ORDER BY t.tag"
    both = ["--dataset", f"blocks={DATASET}", "--dataset", "tags=fixture.tags"]
    gas = lite.rows.column("gas_used").to_pylist()
    as_json = trace("query", *both, "--json", sql, env=env)
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["rows"] == [["a", gas[1]], ["b", gas[2]], ["c", gas[5]]]
    assert doc["versions"]["tags"] == ds.dataset_version and set(doc["versions"]) == {"blocks", "tags"}
    as_csv = trace("query", *both, "--format", "csv", sql, env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["tag", "gas_used"], ["a", str(gas[1])], ["b", str(gas[2])], ["c", str(gas[5])]
    ]  # fmt: skip
    # A bare NAME is the relation `dataset`, beside named ones.
    mixed = trace("query", "--dataset", DATASET, "--dataset", "tags=fixture.tags", "--json",
                  "SELECT count(*) FROM dataset JOIN tags USING (block_number)", env=env)  # fmt: skip
    assert mixed.returncode == 0, mixed.stderr
    assert json.loads(mixed.stdout)["rows"] == [[3]]

    missing = trace("query", "--dataset", "tags=fixture.tags", "SELECT * FROM blocks", env=env)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: DISALLOWED_RELATION: ") and "the relations are tags" in missing.stderr
    twice = trace("query", "--dataset", "a=fixture.tags", "--dataset", f"a={DATASET}", "SELECT 1", env=env)
    assert twice.returncode == 2 and "relation 'a' is given twice" in twice.stderr
    bad = trace("query", "--dataset", f"from={DATASET}", "SELECT 1", env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error: RELATION_NAME_INVALID: ")
