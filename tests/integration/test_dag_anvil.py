"""A DAG on a real chain: a follow_head chain_sync of anvil's transactions (real Cryo, a
real worker) and an alert_evaluate on each new range. A large transfer sent on anvil
arrives as exactly one webhook delivery naming its transaction hash; a small one as none."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.anvil import AnvilNode
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.dag_support import StaticBundleLookupDouble
from tests.integration.conftest import fast_alert_settings
from tests.integration.test_alert_evaluate import signing_key  # noqa: F401  (fixture)
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.adapters.postgres.dag_lookups import PostgresAlertLookup
from trace_platform.adapters.postgres.dag_repository import DagRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.core.config import Settings
from trace_platform.servers.api.dags.service import DagService
from trace_platform.servers.api.identity import Principal, Role

ORG = "00000000-0000-0000-0000-0000000000ef"
WHO = Principal(ORG, str(uuid.uuid4()), Role.EDITOR)
ETH = 10**18

# Flags transfers of at least 1 ETH; whatever form Cryo gave the u256 value.
LARGE_TRANSFERS = b"""
def main(event, context):
    cols = event["inputs"]["columns"]
    rows = event["inputs"]["rows"]
    b, h = cols.index("block_number"), cols.index("transaction_hash")
    v = next(cols.index(c) for c in ("value_string", "value_f64", "value") if c in cols)
    alerts = []
    for row in rows:
        value = row[v]
        value = int(value, 16) if isinstance(value, str) and value.startswith("0x") else int(float(value))
        if value >= 10**18:
            alerts.append({
                "dedupe_key": "large-" + row[h],
                "event_time": "2026-01-01T00:00:00Z",
                "severity": "warning",
                "chain_id": 31337,
                "block_number": row[b],
                "tx_hash": row[h],
                "payload": {"wei": str(value)},
            })
    return {"alerts": alerts}
"""


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    try:
        anvil.mine(3)
        yield anvil
    finally:
        anvil.stop()


@pytest.fixture
async def running(
    settings: Settings,
    node: AnvilNode,
    signing_key: Ed25519PrivateKey,  # noqa: F811
) -> AsyncIterator[RunningPlatform]:
    fast = fast_alert_settings(replace(settings, rpc_pools={"local": node.url}))
    fast = replace(
        fast,
        dispatcher=replace(fast.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
        invoker=replace(fast.invoker, limits=replace(fast.invoker.limits, timeout_seconds=30.0)),
    )
    platform = await start_platform(fast, migrate=False, run_worker=True)
    yield platform
    await platform.stop(grace=0.5)


@pytest.mark.timeout(240)
async def test_a_large_transfer_on_anvil_is_delivered_once_and_a_small_one_not_at_all(
    running: RunningPlatform,
    settings: Settings,
    node: AnvilNode,
    signing_key: Ed25519PrivateKey,  # noqa: F811
    db: asyncpg.Connection,
) -> None:
    path = settings.data_dir / "bundles" / "large.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    signed_zip(path, signing_key, "python", "handler.main", {"handler.py": LARGE_TRANSFERS})
    bundles = StaticBundleLookupDouble()
    bundle = bundles.add(ORG, f"file://{path}", hashlib.sha256(path.read_bytes()).hexdigest())
    start = node.block_number() + 1
    dag = f"""
name: watch
jobs:
  - name: watch_chain
    kind: chain_sync
    chain_sync:
      chain_id: 31337
      mode: {{kind: follow_head, from_block: {start}, tail_lag: 0,
              head_poll_interval_seconds: 1, max_head_age_seconds: 30}}
      streams:
        transactions: {{cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 1, max_inflight: 4}}
  - name: large_transfers
    kind: alert_evaluate
    bundle: {bundle}
    alert: large transfers
    upstream: watch_chain.transactions
    sql: SELECT * FROM dataset
"""
    with webhook_receiver() as receiver:
        await AlertRepository(running.pool).create_definition(ORG, "large transfers", [receiver.url("/hook")])
        service = DagService(DagRepository(running.pool), bundles, PostgresAlertLookup(running.pool), {"local"})
        await service.deploy(WHO, dag)
        await service.activate(WHO, "watch", "1")
        to = node.accounts[1]
        big = node.send(to=to, value=hex(5 * ETH))["transactionHash"]
        small = node.send(to=to, value=hex(ETH // 1000))["transactionHash"]
        last = node.block_number()

        async def evaluated() -> bool:
            # Every range up to the small transfer's block was synced and evaluated.
            n = await db.fetchval(
                "SELECT count(*) FROM tasks t JOIN dag_routes r ON r.task_id = t.id "
                "WHERE t.status = 'completed' AND (t.config->>'range_end')::bigint > $1",
                last - 1,
            )
            delivered = await db.fetchval("SELECT count(*) FROM alert_deliveries WHERE status = 'delivered'")
            return bool(n >= 1 and delivered >= 1)

        await eventually(evaluated, timeout=180, interval=0.3)
        events = await db.fetch("SELECT tx_hash, alert_definition_id FROM alert_events")
        assert [e["tx_hash"] for e in events] == [big]
        sent = receiver.delivered()
        assert len(sent) == 1 and sent[0].body["tx_hash"] == big
        assert small not in json.dumps([r.body for r in sent])
        # One alert task per synced range (each range routed once, none missed).

        async def one_route_per_range() -> bool:
            ranges = await db.fetch("SELECT dataset_version FROM chain_sync_ranges WHERE status = 'completed'")
            routed = await db.fetch("SELECT dataset_version FROM dag_routes")
            got, want = (
                sorted(str(r["dataset_version"]) for r in routed),
                sorted(str(r["dataset_version"]) for r in ranges),
            )
            return bool(want) and got == want

        await eventually(one_route_per_range, timeout=30)
