"""Block-to-alert latency: from the mining of a transfer's block to the webhook receiving its alert.

Full stack in this process (Dispatcher with planner and head observer, worker with real
Cryo and the sandboxed UDF invoker, Query Service, Sink, delivery, the public API) against
a fresh PostgreSQL database and anvil at ``--block-time 1``. Through the public API: a
signed Python bundle that flags transfers above 1 ETH is uploaded, an alert with a
loopback webhook created, and a DAG of a follow_head chain_sync (tail_lag 0, transactions,
one block per range) and an alert_evaluate on each new range deployed and activated. After
a warm-up, ``--transfers`` large transfers are sent, one per block.

A transfer's block counts as mined when a thread polling anvil every 10 ms first sees it
(the block's own timestamp has a resolution of 1 s; that number is printed too). Where the
time goes comes from the platform's own timestamps (PostgreSQL ``now()``, same machine):
head observation (chain_head_observations, sampled every 10 ms), planning (the cryo task's
created_at), Cryo queue and run (started_at, finished_at), publication (dataset_versions),
routing (the alert_evaluate task's created_at), UDF start (its started_at), query (its
query_audit row), UDF (its buffered publish), sink (alert_events), delivery (the
delivery's last_attempt_at, then the receiver's clock).

Each ``--profile`` is one run on its own database: ``default`` uses the platform's default
loop intervals, ``tuned`` the short ones given in TUNED (the settings that matter).

    .venv/bin/python bench/block_to_alert.py [--transfers 20] [--profile default --profile tuned]
        [--head-poll 1 --head-poll 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from bench_support import drop_db, dsn_for, fresh_db
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trace_platform.adapters.postgres.identity_repository import IdentityRepository
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.app import start_platform
from trace_platform.clients.api.alerts import AlertsClient
from trace_platform.clients.api.bundles import BundlesClient
from trace_platform.clients.api.dags import DagsClient
from trace_platform.core.bundles import build_bundle
from trace_platform.core.config import (
    DeliverySettings,
    DispatcherSettings,
    QuerySettings,
    Settings,
    SinkSettings,
    TokenSettings,
    UserAuthSettings,
    WorkerSettings,
)
from trace_platform.core.user_tokens import issue_user_token
from trace_platform.lite.anvil import AnvilNode

ORG = "00000000-0000-4000-8000-0000000000b2"
ETH = 10**18
HANDLER = b"""
def main(event, context):
    alerts = []
    for block, tx_hash, value in event["inputs"]["rows"]:
        if int(value) > 10**18:
            alerts.append({
                "dedupe_key": tx_hash,
                "event_time": "2026-01-01T00:00:00Z",
                "chain_id": 31337,
                "block_number": block,
                "tx_hash": tx_hash,
                "payload": {"tx_hash": tx_hash, "wei": value},
            })
    return {"alerts": alerts}
"""
DAG = """
name: bench
jobs:
  - name: tip
    kind: chain_sync
    chain_sync:
      chain_id: 31337
      mode: {{kind: follow_head, from_block: {start}, tail_lag: 0,
              head_poll_interval_seconds: {poll}, max_head_age_seconds: 30}}
      streams:
        transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 1, max_inflight: 8}}
  - name: large
    kind: alert_evaluate
    bundle: {bundle}
    alert: large transfers
    upstream: tip.transactions
    sql: SELECT block_number, transaction_hash, value_string FROM dataset
"""
# The loop intervals on the path from a block to its webhook (defaults in core/config.py).
TUNED = {
    "dispatcher.head_observer_interval_seconds": 0.1,
    "dispatcher.planner_interval_seconds": 0.05,
    "dispatcher.outbox_interval_seconds": 0.05,
    "worker.poll_interval_seconds": 0.1,
    "sink.poll_interval_seconds": 0.1,
    "delivery.interval_seconds": 0.05,
}
STAGES = (
    "head_observation",
    "planning",
    "cryo_queue",
    "cryo_run",
    "publication",
    "routing",
    "udf_start",
    "query",
    "udf",
    "sink",
    "delivery_wait",
    "delivery_post",
)


def _settings(db: str, tmp: Path, url: str, profile: str) -> Settings:
    s = Settings(
        database_url=dsn_for(db),
        listen="127.0.0.1:0",
        data_dir=tmp,
        worker_token=secrets.token_urlsafe(16),
        admin_token=secrets.token_urlsafe(16),
        scratch_uri=f"file://{tmp}/scratch",
        db_pool_min=1,
        db_pool_max=8,
        tokens=TokenSettings(key_dir=tmp / "keys", ttl_seconds=300),
        dispatcher=DispatcherSettings(),
        worker=WorkerSettings(worker_id="bench-worker"),
        query=QuerySettings(slots=2, memory_limit="512MB", threads=1),
        sink=SinkSettings(),
        # What `trace lite up` sets, plus the loopback receiver.
        delivery=DeliverySettings(allow_http=True, allowed_networks=("127.0.0.0/8",)),
        user_auth=UserAuthSettings(issuer="trace-bench", hs256_secret=secrets.token_urlsafe(32)),
        rpc_pools={"local": url},
    )
    if profile == "tuned":
        for key, value in TUNED.items():
            group, name = key.split(".")
            s = replace(s, **{group: replace(getattr(s, group), **{name: value})})
    return s


@dataclass
class Receiver:
    """Loopback webhook receiver: when each tx hash's alert arrived (wall clock)."""

    port: int = 0
    arrived: dict[str, float] = field(default_factory=dict)
    posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            now = time.time()
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            with rec.lock:
                rec.posts += 1
                rec.arrived.setdefault(str(body.get("tx_hash")), now)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


class BlockWatcher:
    """Polls anvil every 10 ms: the wall-clock time each block number was first seen."""

    def __init__(self, node: AnvilNode) -> None:
        self.node = node
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = -1
        while not self._stop.is_set():
            n = self.node.block_number()
            now = time.time()
            for b in range(last + 1, n + 1):
                self.seen.setdefault(b, now)
            last = max(last, n)
            self._stop.wait(0.01)

    async def next_block(self) -> None:
        """Until a block newer than the newest seen now is seen."""
        before = max(self.seen, default=-1)
        while max(self.seen, default=-1) == before:  # noqa: ASYNC110 (the thread sets it)
            await asyncio.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


async def sample_heads(dsn: str, first_seen: dict[int, float], stop: asyncio.Event) -> None:
    """The head observer's record, sampled every 10 ms: when each head was first recorded."""
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            row = await conn.fetchrow(
                "SELECT head_block, extract(epoch FROM observed_at)::float8 AS at FROM chain_head_observations"
            )
            if row is not None:
                first_seen.setdefault(int(row["head_block"]), float(row["at"]))
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


def _ts(v: Any) -> float | None:
    return None if v is None else float(v.timestamp())


async def breakdown(conn: asyncpg.Connection, block: int, tx_hash: str) -> dict[str, float | None]:
    """The platform's timestamps on the way from block ``block`` to its alert's delivery."""
    cryo = await conn.fetchrow(
        """SELECT t.created_at, t.started_at, t.finished_at, r.dataset_version
           FROM chain_sync_ranges r JOIN tasks t ON t.id = r.task_id
           WHERE r.range_start <= $1 AND r.range_end > $1 AND r.status = 'completed'""",
        block,
    )
    version = await conn.fetchrow(
        "SELECT created_at FROM dataset_versions WHERE dataset_version = $1", cryo["dataset_version"]
    )
    alert = await conn.fetchrow(
        """SELECT t.id, t.created_at, t.started_at, t.finished_at FROM dag_routes r JOIN tasks t ON t.id = r.task_id
           WHERE r.dataset_version = $1""",
        cryo["dataset_version"],
    )
    audit = await conn.fetchrow(
        "SELECT created_at, duration_ms FROM query_audit WHERE task_id = $1 ORDER BY created_at LIMIT 1", alert["id"]
    )
    buffered = await conn.fetchval("SELECT min(created_at) FROM buffered_publishes WHERE task_id = $1", alert["id"])
    event = await conn.fetchrow("SELECT id, created_at FROM alert_events WHERE tx_hash = $1", tx_hash)
    delivery = await conn.fetchrow(
        "SELECT last_attempt_at, delivered_at, attempt FROM alert_deliveries WHERE alert_event_id = $1", event["id"]
    )
    query_end = _ts(audit["created_at"]) + audit["duration_ms"] / 1000 if audit and audit["duration_ms"] else None
    return {
        "cryo_created": _ts(cryo["created_at"]),
        "cryo_started": _ts(cryo["started_at"]),
        "cryo_finished": _ts(cryo["finished_at"]),
        "version_created": _ts(version["created_at"]),
        "alert_task_created": _ts(alert["created_at"]),
        "alert_task_started": _ts(alert["started_at"]),
        "query_end": query_end,
        "buffered": _ts(buffered),
        "event_created": _ts(event["created_at"]),
        "delivery_attempted": _ts(delivery["last_attempt_at"]),
        "delivered": _ts(delivery["delivered_at"]),
        "delivery_attempts": float(delivery["attempt"]),
    }


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


async def _until(check, timeout: float, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (got := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(interval)
    return got


async def _setup(
    addr: str, token: str, tmp: Path, key: Ed25519PrivateKey, hook: str, start: int, head_poll: float
) -> None:
    src = tmp / "udf"
    src.mkdir()
    (src / "handler.py").write_bytes(HANDLER)
    build_bundle(src, "python", "handler.main", key, tmp / "large.zip")
    async with grpc.aio.insecure_channel(addr) as ch:
        bundle = await BundlesClient(ch, token=token).upload(tmp / "large.zip", name="large", runtime="python")
        await AlertsClient(ch, token=token).create("large transfers", [hook])
        deployed = await DagsClient(ch, token=token).deploy(DAG.format(start=start, bundle=bundle.id, poll=head_poll))
        await DagsClient(ch, token=token).activate("bench", str(deployed.version.number))


async def run(profile: str, transfers: int, head_poll: float = 1) -> dict[str, Any]:
    node = AnvilNode.start("--block-time", "1")
    watcher = BlockWatcher(node)
    db = await fresh_db("trace_bench_alert")
    tmp = Path(tempfile.mkdtemp(prefix="trace-bench-alert-"))
    key = Ed25519PrivateKey.generate()
    (tmp / "bundle_keys").mkdir()
    (tmp / "bundle_keys" / "bench.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    settings = _settings(db, tmp, node.url, profile)
    running = await start_platform(settings, migrate=False, run_worker=True)
    heads: dict[int, float] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_heads(dsn_for(db), heads, stop))
    conn = await asyncpg.connect(dsn_for(db))
    try:
        pool = await create_pool(dsn_for(db), min_size=1, max_size=1)
        try:
            await IdentityRepository(pool).ensure_member(ORG, "bench-org", "ada", "editor")
        finally:
            await pool.close()
        assert settings.user_auth.hs256_secret
        token = issue_user_token(settings.user_auth.hs256_secret, issuer="trace-bench", subject="ada", org_id=ORG)
        with receiver() as rec:
            hook = f"http://127.0.0.1:{rec.port}/hook"
            await _setup(running.addr, token, tmp, key, hook, node.block_number() + 1, head_poll)

            async def warm() -> bool:  # a few empty ranges evaluated: the sandbox probe and Cryo are warm
                n = await conn.fetchval(
                    "SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate' AND status = 'completed'"
                )
                return bool(n >= 3)

            await _until(warm, 120)
            sent: list[str] = []
            transfer = {"from": node.accounts[0], "to": node.accounts[1], "value": hex(2 * ETH)}
            for _ in range(transfers):
                await watcher.next_block()
                await asyncio.sleep(0.1)  # early in the block: it goes into the next one
                sent.append(node.rpc("eth_sendTransaction", transfer))

            async def all_arrived() -> bool:
                return all(h in rec.arrived for h in sent)

            await _until(all_arrived, 120)
            await asyncio.sleep(1)
            posts = rec.posts
        retried = int(await conn.fetchval("SELECT count(*) FROM tasks WHERE attempt > 1"))
        rows = []
        for tx in sent:
            receipt = node.rpc("eth_getTransactionReceipt", tx)
            block = int(receipt["blockNumber"], 16)
            header = node.rpc("eth_getBlockByNumber", hex(block), False)
            stamps = await breakdown(conn, block, tx)
            head = min(at for b, at in heads.items() if b >= block)
            rows.append(
                {"block": block, "seen": watcher.seen[block], "timestamp": int(header["timestamp"], 16), "head": head}
                | stamps
                | {"received": rec.arrived[tx]}
            )
    finally:
        stop.set()
        await sampler
        await conn.close()
        await running.stop(grace=0.5)
        watcher.stop()
        node.stop()
        await drop_db(db)
    return summarize(profile, rows, posts, head_poll) | {"tasks_retried": retried}


def summarize(profile: str, rows: list[dict[str, Any]], posts: int, head_poll: float = 1) -> dict[str, Any]:
    chain = (
        "seen",
        "head",
        "cryo_created",
        "cryo_started",
        "cryo_finished",
        "version_created",
        "alert_task_created",
        "alert_task_started",
        "query_end",
        "buffered",
        "event_created",
        "delivery_attempted",
        "received",
    )
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    for r in rows:
        for name, (a, b) in zip(STAGES, itertools.pairwise(chain), strict=True):
            if r[a] is not None and r[b] is not None:
                stages[name].append(r[b] - r[a])
    total = [r["received"] - r["seen"] for r in rows]
    from_ts = [r["received"] - r["timestamp"] for r in rows]
    settings = {"profile": profile, "head_poll_interval_seconds": head_poll} | (TUNED if profile == "tuned" else {})
    return {
        "settings": settings,
        "transfers": len(rows),
        "webhook_posts": posts,
        "redelivered": sum(1 for r in rows if r["delivery_attempts"] != 1),
        "block_seen_to_webhook_s": {
            "p50": round(_pct(total, 50), 3),
            "p95": round(_pct(total, 95), 3),
            "max": round(max(total), 3),
        },
        "block_timestamp_to_webhook_s": {"p50": round(_pct(from_ts, 50), 3), "p95": round(_pct(from_ts, 95), 3)},
        "stages_s": {
            name: {"mean": round(statistics.fmean(v), 3), "p50": round(_pct(v, 50), 3), "p95": round(_pct(v, 95), 3)}
            for name, v in stages.items()
            if v
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20)
    parser.add_argument("--profile", action="append", choices=("default", "tuned"))
    parser.add_argument(
        "--head-poll", action="append", type=float, help="the sync job's head_poll_interval_seconds (default 1)"
    )
    args = parser.parse_args()
    results = []
    for profile in args.profile or ["default", "tuned"]:
        for head_poll in args.head_poll or [1]:
            print(f"profile {profile}, head poll {head_poll} s ...", file=sys.stderr)
            results.append(asyncio.run(run(profile, args.transfers, head_poll)))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
