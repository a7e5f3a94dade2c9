"""The whole user story through the CLI only, as a new user would do it: `trace lite up`
against a real anvil; a signed bundle that flags ETH transfers above a threshold, built
and uploaded with `trace bundle`; an alert with a loopback webhook; a DAG of a follow_head
chain_sync and an alert_evaluate on each new range, deployed and activated with `trace dag`.
A large transfer sent on anvil arrives as exactly one webhook delivery naming its
transaction hash, a small one as none. Once with a Python bundle, once with a Node one."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.anvil import AnvilNode, free_port
from tests.conftest import eventually
from tests.e2e.conftest import spawn, wait_for_line
from tests.webhook_receiver import Receiver, webhook_receiver
from trace_platform.core.config import Settings

ETH = 10**18
THRESHOLD_WEI = ETH  # the bundles flag transfers of more than 1 ETH

# The rows are what the DAG's SQL selects: block_number, transaction_hash (0x hex), value_string.
PYTHON_HANDLER = b"""
THRESHOLD_WEI = 10**18


def main(event, context):
    alerts = []
    for block, tx_hash, value in event["inputs"]["rows"]:
        if int(value) > THRESHOLD_WEI:
            alerts.append({
                "dedupe_key": tx_hash,
                "event_time": "2026-01-01T00:00:00Z",
                "severity": "warning",
                "chain_id": 31337,
                "block_number": block,
                "tx_hash": tx_hash,
                "payload": {"tx_hash": tx_hash, "wei": value, "runtime": "python"},
            })
    return {"alerts": alerts}
"""

NODE_HANDLER = b"""
const THRESHOLD_WEI = 10n ** 18n;

exports.handler = async (event) => ({
  alerts: event.inputs.rows
    .filter(([, , value]) => BigInt(value) > THRESHOLD_WEI)
    .map(([block, txHash, value]) => ({
      dedupe_key: txHash,
      event_time: "2026-01-01T00:00:00Z",
      severity: "warning",
      chain_id: 31337,
      block_number: block,
      tx_hash: txHash,
      payload: { tx_hash: txHash, wei: value, runtime: "node" },
    })),
});
"""

SOURCES = {
    "python": ("handler.main", {"handler.py": PYTHON_HANDLER}),
    "node": ("index.handler", {"index.js": NODE_HANDLER}),
}

DAG = """\
name: watch
jobs:
  - name: watch_chain
    kind: chain_sync
    chain_sync:
      chain_id: 31337
      mode:
        kind: follow_head
        from_block: 0
        tail_lag: 0
        head_poll_interval_seconds: 1
        max_head_age_seconds: 30
      streams:
        transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 1, max_inflight: 4}}
  - name: large_transfers
    kind: alert_evaluate
    bundle: {bundle}
    alert: large transfers
    upstream: watch_chain.transactions
    sql: SELECT block_number, transaction_hash, value_string FROM dataset
"""


def trace(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "trace_platform", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"trace {' '.join(args)}: {out.stderr[-2000:]}"
    return out


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()  # automine: each transaction is its own block, at once
    try:
        yield anvil
    finally:
        anvil.stop()


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize("runtime", ["python", "node"])
async def test_a_large_transfer_arrives_as_one_webhook_and_a_small_one_as_none(
    runtime: str,
    settings: Settings,
    db: asyncpg.Connection,
    node: AnvilNode,
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    data_dir = tmp_path / "lite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACE_")}
    env.update(
        TRACE_DATA_DIR=str(data_dir),
        TRACE_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
        TRACE_RPC_POOL_LOCAL_URL=node.url,
        # The webhook receiver runs on this machine: Lite allows plain http, loopback when asked.
        TRACE_WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8",
        # Short loop intervals keep the test quick; the story is the same at the defaults.
        TRACE_DISPATCHER_PLANNER_INTERVAL_SECONDS="0.05",
        TRACE_DISPATCHER_HEAD_OBSERVER_INTERVAL_SECONDS="0.2",
        TRACE_DISPATCHER_OUTBOX_INTERVAL_SECONDS="0.05",
        TRACE_WORKER_POLL_INTERVAL_SECONDS="0.1",
        TRACE_SINK_POLL_INTERVAL_SECONDS="0.1",
        TRACE_DELIVERY_INTERVAL_SECONDS="0.05",
    )
    # The one thing not done through the CLI: the PostgreSQL the test suite gives each test
    # (Lite would otherwise start its own cluster, which only makes the test slower).
    lite_env = dict(env, TRACE_DATABASE_URL=settings.database_url or "")

    # A signing key, trusted by the platform: its public half in <data dir>/bundle_keys.
    work = tmp_path / "work"
    trace("bundle", "keygen", "--out-dir", str(work / "keys"), "--name", "me", env=env)
    (data_dir / "bundle_keys").mkdir(parents=True)
    shutil.copy(work / "keys" / "me.pub", data_dir / "bundle_keys" / "me.pub")

    lite = spawn(["lite", "up", "--listen", "127.0.0.1:0"], lite_env)
    procs.append(lite)
    wait_for_line(lite, r"trace lite is up on (\S+)", timeout=120, stream="stdout")

    entrypoint, files = SOURCES[runtime]
    source = work / "src"
    source.mkdir()
    for name, text in files.items():
        (source / name).write_bytes(text)
    archive = work / "large_transfers.zip"
    trace(
        "bundle", "build", str(source), "--key", str(work / "keys" / "me.key"),
        "--runtime", runtime, "--entrypoint", entrypoint, "-o", str(archive), env=env,
    )  # fmt: skip
    bundle = json.loads(trace("bundle", "upload", str(archive), "--json", env=env).stdout)
    assert bundle["state"] == "ready" and bundle["runtime"] == runtime, bundle

    with webhook_receiver() as receiver:
        alert = json.loads(
            trace("alerts", "create", "large transfers", "--webhook", receiver.url("/hook"), "--json", env=env).stdout
        )
        (work / "dag.yaml").write_text(DAG.format(bundle=bundle["id"]))
        deployed = json.loads(trace("dag", "deploy", "-f", str(work / "dag.yaml"), "--json", env=env).stdout)
        trace("dag", "activate", "watch", str(deployed["version"]["number"]), env=env)

        to = node.accounts[1]
        big = node.send(to=to, value=hex(5 * ETH))
        small = node.send(to=to, value=hex(THRESHOLD_WEI // 1000))
        assert int(small["blockNumber"], 16) > int(big["blockNumber"], 16)
        await eventually(lambda: _delivered(receiver), timeout=120, interval=0.1)
        await _evaluated(db, int(small["blockNumber"], 16), timeout=60)
        await asyncio.sleep(3)  # a late second delivery would have arrived by now

        sent = receiver.delivered()
        assert len(sent) == 1, [r.body for r in sent]
        body = sent[0].body
        assert body["tx_hash"] == big["transactionHash"] and body["dedupe_key"] == big["transactionHash"]
        assert body["payload"] == {"tx_hash": big["transactionHash"], "wei": str(5 * ETH), "runtime": runtime}
        assert body["alert_definition_id"] == alert["alert_id"]
        assert small["transactionHash"] not in json.dumps([r.body for r in receiver.requests])
        # The CLI tells the same story.
        events = json.loads(trace("alerts", "events", alert["alert_id"], "--json", env=env).stdout)
        assert [e["tx_hash"] for e in events] == [big["transactionHash"]], events
        deliveries = json.loads(trace("alerts", "deliveries", alert["alert_id"], "--json", env=env).stdout)
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("delivered", 1)], deliveries


async def _delivered(receiver: Receiver) -> bool:
    return bool(receiver.delivered())


async def _evaluated(db: asyncpg.Connection, block: int, timeout: float) -> None:
    """The alert_evaluate of the range holding ``block`` completed: the small transfer was
    looked at (and found too small), so no delivery for it is not merely "not yet"."""

    async def done() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate' AND status = 'completed'"
            " AND (config->>'range_start')::bigint <= $1 AND (config->>'range_end')::bigint > $1",
            block,
        )
        return bool(n)

    await eventually(done, timeout=timeout, interval=0.2)
