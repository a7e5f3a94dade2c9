"""Sink throughput: rows per second upserted from JSONL batches through the real sink
loop, and in the same run a plain COPY + INSERT ... ON CONFLICT baseline of the same rows.

The sink path is the production one: buffered_publishes records and 'buffers' queue
messages as the Dispatcher's outbox writes them -> SinkConsumer (receive, load the
trusted record, read the artifact through the local object store, strict validation,
one transaction per batch: upsert + routing + mark applied, ack). About 20 % of the
dedupe keys repeat keys of earlier batches. The baseline reads the same files, parses
them with json.loads (no validation), COPYs each batch into a temporary table and runs
INSERT INTO alert_events ... SELECT ... ON CONFLICT DO NOTHING, one transaction per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import uvloop
from bench_support import drop_db, dsn_for, fresh_db

from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.adapters.queue.postgres import PostgresQueue
from trace_platform.core.config import SinkSettings
from trace_platform.servers.sink.consumer import BUFFER_QUEUE, BatchReader, SinkConsumer, SinkProcessor

ORG = "00000000-0000-0000-0000-0000000000be"
HASH = "0x" + "ab" * 32
COLUMNS = ("dedupe_key", "event_time", "severity", "chain_id", "block_number", "block_hash", "tx_hash", "payload")


def make_batches(root: Path, batches: int, rows: int, dup_ratio: float) -> tuple[list[Path], int]:
    rng = random.Random(7)
    issued: list[str] = []
    files = []
    for b in range(batches):
        lines = []
        for i in range(rows):
            if issued and rng.random() < dup_ratio:
                key = rng.choice(issued)
            else:
                key = f"bench:{b}:{i}"
                issued.append(key)
            row = {
                "dedupe_key": key,
                "event_time": f"2026-01-02T03:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                "severity": "warning",
                "chain_id": 1,
                "block_number": b * rows + i,
                "block_hash": HASH,
                "tx_hash": HASH,
                "payload": {"value": str(i * 17), "from": "0x" + "12" * 20},
            }
            lines.append(json.dumps(row))
        path = root / f"batch-{b:04d}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files, len(issued)


async def run_sink(pool: asyncpg.Pool, root: Path, files: list[Path], concurrency: int) -> float:
    task_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO tasks (id, org_id, operator, status, max_attempts) VALUES ($1, $2, 'bench', 'running', 1)",
        task_id,
        ORG,
    )
    publish_ids = []
    for f in files:
        publish_ids.append(
            await pool.fetchval(
                "INSERT INTO buffered_publishes (task_id, attempt, org_id, batch_uri, content_type,"
                " batch_size_bytes, dedupe_scope) VALUES ($1, 1, $2, $3, 'application/jsonl', $4, 'alert_events')"
                " RETURNING id",
                task_id,
                ORG,
                f"file://{f}",
                f.stat().st_size,
            )
        )
    queue = PostgresQueue(pool)
    settings = SinkSettings(receive_batch=concurrency, poll_interval_seconds=0.05)
    processor = SinkProcessor(
        AlertRepository(pool), BatchReader(ObjectStores([LocalObjectStore([root])]), 1 << 30), settings
    )
    consumer = SinkConsumer(processor, queue, settings)
    start = time.perf_counter()
    await queue.publish(BUFFER_QUEUE, [{"publish_id": str(p)} for p in publish_ids])
    runner = asyncio.create_task(consumer.run())
    while True:
        if not await pool.fetchval("SELECT count(*) FROM buffered_publishes WHERE status = 'pending'"):
            break
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await queue.close()
    if await pool.fetchval("SELECT count(*) FROM buffered_publishes WHERE status <> 'applied'"):
        raise SystemExit("some batches were not applied")
    return elapsed


async def run_baseline(pool: asyncpg.Pool, files: list[Path]) -> float:
    start = time.perf_counter()
    for f in files:
        records = []
        for line in f.read_text().splitlines():
            r = json.loads(line)
            records.append(
                (
                    r["dedupe_key"],
                    datetime.fromisoformat(r["event_time"]),
                    r["severity"],
                    r["chain_id"],
                    r["block_number"],
                    r["block_hash"],
                    r["tx_hash"],
                    json.dumps(r["payload"]),
                )
            )
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "CREATE TEMP TABLE staging (dedupe_key text, event_time timestamptz, severity text, chain_id bigint,"
                " block_number bigint, block_hash text, tx_hash text, payload text) ON COMMIT DROP"
            )
            await conn.copy_records_to_table("staging", records=records, columns=COLUMNS)
            await conn.execute(
                "INSERT INTO alert_events (org_id, dedupe_key, event_time, severity, chain_id, block_number,"
                " block_hash, tx_hash, payload) SELECT $1, dedupe_key, event_time, severity, chain_id, block_number,"
                " block_hash, tx_hash, payload::jsonb FROM staging ON CONFLICT (org_id, dedupe_key) DO NOTHING",
                ORG,
            )
    return time.perf_counter() - start


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--dup-ratio", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=4, help="batches the sink applies at once")
    args = parser.parse_args()
    name = await fresh_db("trace_bench_sink")
    try:
        pool = await create_pool(dsn_for(name), 2, args.concurrency + 4)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            files, unique = make_batches(root, args.batches, args.rows, args.dup_ratio)
            total = args.batches * args.rows
            sink_s = await run_sink(pool, root, files, args.concurrency)
            assert await pool.fetchval("SELECT count(*) FROM alert_events") == unique
            await pool.execute("TRUNCATE alert_deliveries, alert_events")
            base_s = await run_baseline(pool, files)
            assert await pool.fetchval("SELECT count(*) FROM alert_events") == unique
        await pool.close()
    finally:
        await drop_db(name)
    print(f"{args.batches} batches x {args.rows} rows = {total} rows, {unique} unique dedupe keys")
    print(f"sink loop (validate + upsert + route): {sink_s:.2f} s  {total / sink_s:,.0f} rows/s")
    print(f"baseline (COPY + ON CONFLICT):         {base_s:.2f} s  {total / base_s:,.0f} rows/s")
    print(f"ratio sink/baseline: {base_s / sink_s:.2f}")


if __name__ == "__main__":
    uvloop.run(main())
