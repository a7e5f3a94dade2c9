"""`trace sql check` and `trace query` the way a user runs them, against `trace lite up`,
and the Query Service's Prometheus endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import asyncpg
import pyarrow as pa
import pytest

from tests.anvil import free_port
from tests.datasets import FIXTURE_ROWS, write_dataset
from tests.e2e.conftest import all_output, spawn, wait_for_line
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.core.config import LITE_ORG_ID, Settings


def trace(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trace_platform", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("sql", "code", "out"),
    [
        ("SELECT block_number FROM dataset WHERE block_number > 10", 0, "ok"),
        ("WITH t AS (SELECT 1 AS x) SELECT x FROM t", 0, "ok"),
        ("SELECT * FROM read_parquet('/etc/passwd')", 1, "TABLE_FUNCTION"),
        ("DROP TABLE dataset", 1, "NOT_A_SELECT"),
        ("SELECT 1; SELECT 2", 1, "MULTIPLE_STATEMENTS"),
        ("SELEC 1", 1, "PARSE_ERROR"),
    ],
)
def test_sql_check_exit_code_and_output(sql: str, code: int, out: str) -> None:
    done = trace("sql", "check", sql)
    assert (done.returncode, done.stdout.strip()) == (code, out)
    assert sql not in done.stdout + done.stderr


async def test_trace_query_prints_a_table_and_json_and_metrics_count_it(
    settings: Settings, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    data_dir = tmp_path / "lite"
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DATA_DIR=str(data_dir),
        TRACE_DATABASE_URL=settings.database_url or "",
        TRACE_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
        TRACE_LOG_LEVEL="INFO",
    )
    lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
    procs.append(lite)
    addr = wait_for_line(lite, r"trace lite is up on (\S+)", timeout=60, stream="stdout")
    env["TRACE_ADDR"] = addr

    store = LocalObjectStore([data_dir / "objects"])
    ds = write_dataset(store, f"file://{data_dir / 'objects'}", [pa.table(FIXTURE_ROWS)])
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        await DatasetRepository(pool).publish(LITE_ORG_ID, "fixture.alerts", ds.publication)
    finally:
        await pool.close()

    table = trace(
        "query", "--dataset", "fixture.alerts", "SELECT dedupe_key, block_number FROM dataset ORDER BY 2", env=env
    )
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["dedupe_key", "|", "block_number"]
    assert lines[2].split() == ["dedupe-001", "|", "100"]
    assert lines[-1] == "(3 rows)"

    as_json = trace(
        "query",
        "--dataset",
        "fixture.alerts",
        "--json",
        "--limit",
        "2",
        "SELECT dedupe_key FROM dataset ORDER BY 1",
        env=env,
    )
    doc = json.loads(as_json.stdout)
    assert doc["rows"] == [["dedupe-001"], ["dedupe-002"]] and doc["truncated"] is True
    assert doc["columns"] == [{"name": "dedupe_key", "type": "VARCHAR"}]
    assert doc["dataset_version"] == ds.dataset_version

    refused = trace("query", "--dataset", "fixture.alerts", "SELECT * FROM read_csv('/etc/passwd')", env=env)
    assert refused.returncode != 0 and "TABLE_FUNCTION" in refused.stderr
    missing = trace("query", "--dataset", "fixture.nope", "SELECT 1 FROM dataset", env=env)
    assert missing.returncode != 0 and "DATASET_NOT_FOUND" in missing.stderr
    # A gate refusal says what to change: the reason once, then which function (found by the
    # CLI in its own text: the server never echoes it) or which relations there are.
    function = trace("query", "--dataset", "a=fixture.alerts", "SELECT getenv('HOME') FROM a", env=env)
    assert function.returncode == 1 and function.stderr.count("DISALLOWED_FUNCTION") == 1
    assert "hint: getenv() is not an allowed function" in function.stderr, function.stderr
    relation = trace("query", "--dataset", "a=fixture.alerts", "SELECT * FROM b", env=env)
    assert relation.returncode == 1 and relation.stderr.count("DISALLOWED_RELATION") == 1
    assert "hint: the query may read the relations a (--dataset REL=NAME)" in relation.stderr, relation.stderr

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    assert 'trace_query_total{rpc="query"} 2.0' in metrics
    assert 'trace_query_denied_total{reason="TABLE_FUNCTION",rpc="query"} 1.0' in metrics
    assert 'trace_query_denied_total{reason="DISALLOWED_FUNCTION",rpc="query"} 1.0' in metrics
    assert 'trace_query_errors_total{reason="DATASET_NOT_FOUND",rpc="query"} 1.0' in metrics
    assert 'trace_query_duration_seconds_count{rpc="query"} 2.0' in metrics
    # Raw SQL never reaches the logs.
    lite.send_signal(signal.SIGINT)
    assert lite.wait(timeout=30) == 0
    logs = "".join(all_output(lite))
    assert "grpc server started" in logs
    assert "read_csv" not in logs and "dedupe_key" not in logs and "getenv" not in logs


def test_lite_up_shows_sync_progress_and_trace_query_answers_from_synced_data(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    from tests.anvil import AnvilNode

    node = AnvilNode.start()
    try:
        node.send(to=node.accounts[1], value=hex(10**18))
        node.mine(40 - node.block_number())
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
        env.update(TRACE_DATA_DIR=str(tmp_path / "lite"), TRACE_RPC_POOL_LOCAL_URL=node.url)
        lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], env)
        procs.append(lite)
        env["TRACE_ADDR"] = wait_for_line(lite, r"trace lite is up on (\S+)", timeout=60, stream="stdout")
        spec = tmp_path / "sync.yaml"
        spec.write_text(
            "kind: chain_sync\nname: mini\nchain_id: 31337\n"
            "mode:\n  kind: fixed_target\n  from_block: 0\n  to_block: 40\n"
            "streams:\n  blocks:\n    cryo_dataset_name: blocks\n    rpc_pool: local\n"
            "    chunk_size: 10\n    max_inflight: 2\n"
        )
        applied = trace("apply", "-f", str(spec), env=env)
        assert applied.returncode == 0 and "mini: created" in applied.stdout, applied.stderr
        # The live view in the foreground shows the stream reaching its target.
        view = r"mini\.blocks\s+synced to\s+40\s+planned to\s+40 .*done\s+4 ranges / 40 blocks"
        wait_for_line(lite, view, timeout=60, stream="stdout")
        status = json.loads(trace("status", "mini", "--json", env=env).stdout)
        stream = status["jobs"][0]["streams"][0]
        assert (stream["cursor"], stream["completed_blocks"], status["jobs"][0]["completed"]) == (40, 40, True)
        out = trace(
            "query",
            "--dataset",
            "mini.blocks",
            "--json",
            "SELECT count(DISTINCT block_number) AS n FROM dataset",
            env=env,
        )
        assert json.loads(out.stdout)["rows"] == [[40]], out.stderr
        paused = trace("pause", "mini", env=env)
        assert paused.returncode == 0 and "paused" in paused.stdout
        missing = trace("pause", "nope", env=env)
        assert missing.returncode != 0 and "CHAIN_SYNC_NOT_FOUND" in missing.stderr
        lite.send_signal(signal.SIGINT)
        assert lite.wait(timeout=30) == 0
    finally:
        node.stop()
