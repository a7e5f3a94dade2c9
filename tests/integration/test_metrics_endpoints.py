"""The process's one Prometheus endpoint, scraped while a real platform works: a chain
sync against anvil (one job that syncs, one whose RPC pool answers the head but fails
every extraction), tasks that fail, retry and lose their lease, and alert tasks whose
sandboxed UDFs produce a delivered batch, a dead-lettered batch and a timeout. Every
named family must be on the endpoint and must have moved."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import grpc
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from tests.alert_udfs import PYTHON_ALERTS
from tests.anvil import AnvilNode, free_port
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.datasets import write_dataset
from tests.integration.conftest import ORG
from tests.integration.test_alert_evaluate import TRANSFERS, signing_key  # noqa: F401 (fixture)
from tests.webhook_receiver import webhook_receiver
from trace_platform.adapters.objectstore.stores import LocalObjectStore
from trace_platform.adapters.postgres.alert_repository import AlertRepository
from trace_platform.app import start_platform
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.core.config import Settings
from trace_platform.gen.trace.v1 import dispatcher_pb2

pytestmark = pytest.mark.integration
BLOCKS = 20
SPIN = b"def main(event):\n    while True:\n        pass\n"
BAD_ROW = b'def main(event):\n    return {"alerts": [{"dedupe_key": "x", "severity": "loud"}]}\n'

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sync_yaml(name: str, pool: str) -> str:
    return f"""
kind: chain_sync
name: {name}
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: {BLOCKS}
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: {pool}
    chunk_size: 10
    max_inflight: 2
"""


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    anvil.mine(BLOCKS + 5)
    try:
        yield anvil
    finally:
        anvil.stop()


@contextmanager
def head_only_rpc(upstream: str) -> Iterator[str]:
    """A JSON-RPC node that answers the head observer (chain id, block number, from
    ``upstream``) and refuses everything else: every extraction through it fails."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = json.loads(body)
            if isinstance(request, dict) and request.get("method") in ("eth_chainId", "eth_blockNumber"):
                upstream_request = urllib.request.Request(
                    upstream, body, {"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(upstream_request, timeout=5) as resp:
                    answer = resp.read()
            else:
                rid = request.get("id") if isinstance(request, dict) else None
                answer = json.dumps({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "no"}}).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:
                pass  # the extractor gave up on this call already

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _get(port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())


async def scrape(port: int) -> Samples:
    """Off the event loop, as Prometheus would: the gauges are read on the loop."""
    text = await asyncio.to_thread(_get, port)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def present(samples: Samples, name: str) -> bool:
    return any(n == name for n, _ in samples)


def bundle(settings: Settings, key: Ed25519PrivateKey, name: str, source: bytes) -> str:
    path = settings.data_dir / "bundles" / f"{name}.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    signed_zip(path, key, "python", "handler.main", {"handler.py": source})
    return f"file://{path}"


async def test_every_service_family_is_served_and_moves(
    settings: Settings,
    node: AnvilNode,
    signing_key: Ed25519PrivateKey,  # noqa: F811 (the fixture imported above)
    db: asyncpg.Connection,
) -> None:
    port = free_port()
    with head_only_rpc(node.url) as broken_url, webhook_receiver() as receiver:
        fast = replace(
            settings,
            metrics_listen=f"127.0.0.1:{port}",
            rpc_pools={"local": node.url, "broken": broken_url},
            dispatcher=replace(
                settings.dispatcher,
                planner_interval_seconds=0.05,
                head_observer_interval_seconds=0.2,
                default_max_attempts=2,
            ),
            invoker=replace(settings.invoker, limits=replace(settings.invoker.limits, timeout_seconds=3.0)),
            sink=replace(settings.sink, poll_interval_seconds=0.1),
            delivery=replace(
                settings.delivery, interval_seconds=0.05, allowed_networks=("127.0.0.0/8",), allow_http=True
            ),
        )
        running = await start_platform(fast, migrate=False, run_worker=True)
        try:
            before = await scrape(port)
            assert present(before, "process_cpu_seconds_total") and present(before, "python_info")
            store = LocalObjectStore([settings.data_dir / "objects"])
            ds = write_dataset(store, f"file://{settings.data_dir / 'objects'}", [pa.table(TRANSFERS)])
            definition = await AlertRepository(running.pool).create_definition(ORG, "big", [receiver.url("/ops")])
            async with grpc.aio.insecure_channel(running.addr) as ch:
                assert settings.admin_token
                admin = ChainSyncClient(ch, admin_token=settings.admin_token)
                await admin.apply(ORG, sync_yaml("good", "local"))
                await admin.apply(ORG, sync_yaml("bad", "broken"))
                client = DispatcherClient(ch, admin_token=settings.admin_token)

                def alert_task(bundle_url: str, max_attempts: int = 1) -> dispatcher_pb2.TaskSpec:
                    config = {
                        "bundle_url": bundle_url,
                        "dataset_uuid": ds.dataset_uuid,
                        "sql": "SELECT block_number, value FROM dataset ORDER BY block_number",
                        "alert_definition_id": definition,
                    }
                    return dispatcher_pb2.TaskSpec(
                        org_id=ORG,
                        operator="alert_evaluate",
                        config_json=json.dumps(config),
                        datasets=[ds.grant_pb],
                        max_attempts=max_attempts,
                    )

                key = signing_key
                await client.create_tasks(
                    [
                        dispatcher_pb2.TaskSpec(org_id=ORG, operator="fail", max_attempts=2),
                        dispatcher_pb2.TaskSpec(
                            org_id=ORG, operator="sleep", config_json='{"seconds": 60}', max_attempts=1
                        ),
                        alert_task(bundle(settings, key, "alerts", PYTHON_ALERTS)),
                        alert_task(bundle(settings, key, "bad", BAD_ROW)),
                        alert_task(bundle(settings, key, "spin", SPIN)),
                    ]
                )

                async def sleeper_running() -> bool:
                    n = await db.execute(
                        "UPDATE tasks SET lease_expires_at = now() - interval '1 second'"
                        " WHERE operator = 'sleep' AND status = 'running'"
                    )
                    return bool(n == "UPDATE 1")

                await eventually(sleeper_running, timeout=15)

                async def settled() -> Samples | None:
                    s = await scrape(port)
                    stream = {"job": "good", "stream": "blocks"}
                    done = (
                        total(s, "trace_chain_sync_synced_block", **stream) == BLOCKS
                        and total(s, "trace_chain_sync_ranges_failed", job="bad") >= 1
                        and total(s, "trace_delivery_attempts_total", outcome="delivered") >= 1
                        and total(s, "trace_sink_dead_letters_total") >= 1
                        and total(s, "trace_invoker_timeouts_total") >= 1
                        and total(s, "trace_dispatcher_lease_expiries_total") >= 1
                        and total(s, "trace_dispatcher_completions_total", status="failed") >= 3
                    )
                    return s if done else None

                after: Samples = await eventually(settled, timeout=60, interval=0.5)
        finally:
            await running.stop(grace=0.5)

    def moved(name: str, **labels: str) -> bool:
        return total(after, name, **labels) > total(before, name, **labels)

    # The Dispatcher: claims, completions, retries, lease expiries, the outbox relay, and
    # the state read from PostgreSQL (tasks by state and operator, queues, outbox lag).
    assert moved("trace_dispatcher_claims_total", operator="cryo_ingest", outcome="claimed")
    assert moved("trace_dispatcher_claims_total", operator="fail", outcome="claimed")
    assert moved("trace_dispatcher_completions_total", status="completed")
    assert moved("trace_dispatcher_retries_total")
    assert moved("trace_dispatcher_lease_expiries_total")
    assert moved("trace_dispatcher_outbox_relayed_total")
    assert total(after, "trace_dispatcher_tasks", state="completed", operator="cryo_ingest") == BLOCKS // 10
    assert total(after, "trace_dispatcher_tasks", state="failed", operator="fail") == 1
    assert total(after, "trace_dispatcher_tasks", state="failed", operator="sleep") == 1
    for gauge in ("outbox_pending", "outbox_lag_seconds"):
        assert present(after, f"trace_dispatcher_{gauge}")
    # chain_sync: per stream cursor, synced-to, head, lag; failed ranges; planner and head observer.
    good = {"job": "good", "stream": "blocks"}
    assert total(after, "trace_chain_sync_cursor_block", **good) == BLOCKS
    assert total(after, "trace_chain_sync_head_block", **good) == node.block_number()
    assert total(after, "trace_chain_sync_lag_blocks", **good) == 0
    assert total(after, "trace_chain_sync_lag_blocks", job="bad") == BLOCKS
    assert total(after, "trace_chain_sync_lag_seconds", job="bad") > 0
    assert total(after, "trace_chain_sync_ranges_in_flight", job="bad") == 2
    assert total(after, "trace_chain_sync_synced_block", job="bad") == 0
    assert moved("trace_chain_sync_ranges_planned_total")
    assert moved("trace_chain_sync_head_observations_total", outcome="ok")
    # The sink and delivery.
    assert moved("trace_sink_batches_total", outcome="applied")
    assert moved("trace_sink_batches_total", outcome="dead_lettered")
    assert moved("trace_sink_rows_total") and moved("trace_sink_events_created_total")
    assert moved("trace_sink_batch_duration_seconds_count")
    assert moved("trace_delivery_attempts_total", channel="webhook", outcome="delivered")
    assert moved("trace_delivery_latency_seconds_count", channel="webhook")
    # The invoker: runs by runtime and outcome, cold starts, timeouts.
    assert moved("trace_invoker_runs_total", runtime="python", outcome="ok")
    assert moved("trace_invoker_runs_total", runtime="python", outcome="UDF_TIMEOUT")
    assert moved("trace_invoker_cold_starts_total", runtime="python")
    assert moved("trace_invoker_timeouts_total", runtime="python")
    assert moved("trace_invoker_run_duration_seconds_count", runtime="python")
    # The Query Service (the alert tasks' TaskQuery) on the same endpoint, and the process.
    assert moved("trace_query_duration_seconds_count", rpc="task_query")
    assert moved("process_cpu_seconds_total")
    # Labels stay bounded: no task, publish or delivery id anywhere.
    ids = {str(r["id"]) for r in await db.fetch("SELECT id FROM tasks")}
    assert ids and not {v for _, ls in after for _, v in ls} & ids
    assert definition not in {v for _, ls in after for _, v in ls}
