"""Smoke test of the cluster profile (issue 12, item 9): every role its own `trace serve
ROLE` process with a data directory of its own, so nothing reaches another role through
memory or a shared file: only PostgreSQL, gRPC (mutual TLS between every process, and from
the user's client), moto's server on loopback (S3 for datasets, scratch and bundles; SQS
for the wake-ups; STS) and the chain (a real anvil).

The story, through the public API only: a user uploads a signed bundle, creates an alert
with a loopback webhook, deploys and activates a DAG of a follow_head chain_sync and an
alert_evaluate; a large transfer on anvil arrives as exactly one webhook, a small one as
none; the synced transactions answer a query. On failure, the tail of every process's
stderr is in the message. Run: `.venv/bin/pytest tests/e2e/test_cluster_smoke.py -p no:cacheprovider`.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.anvil import AnvilNode, free_port
from tests.api_support import make_user
from tests.bundle_helpers import signed_zip
from tests.conftest import eventually
from tests.e2e.conftest import output_tail, spawn, trace_env, wait_for_line
from tests.e2e.test_user_story import DAG, ETH, PYTHON_HANDLER, THRESHOLD_WEI
from tests.moto_server import moto_server
from tests.tls_certs import Pki, make_ca
from tests.webhook_receiver import Receiver, webhook_receiver
from trace_platform.adapters.aws.sts import StsCredentials
from trace_platform.adapters.postgres.pool import create_pool
from trace_platform.clients.api.connect import aconnect
from trace_platform.clients.channel import ClientTls
from trace_platform.core.config import ObjectStoreSettings, Settings
from trace_platform.core.dataset_registry import ChainSyncStreamSource
from trace_platform.core.tokens import CapabilityClaims

BUCKET = "trace-smoke"
# Each role's own process, in start order (all start at once; none needs another up to start).
ROLES = ("dispatcher", "query", "invoker", "sink", "delivery", "api", "worker")


def tls_env(pki: Pki) -> dict[str, str]:
    """Serve with the server certificate, require client certificates, dial with one."""
    return {
        "TRACE_TLS_CERT_FILE": str(pki.server.cert),
        "TRACE_TLS_KEY_FILE": str(pki.server.key),
        "TRACE_TLS_CLIENT_CA_FILE": str(pki.ca),
        "TRACE_TLS_CA_FILE": str(pki.ca),
        "TRACE_TLS_CLIENT_CERT_FILE": str(pki.client.cert),
        "TRACE_TLS_CLIENT_KEY_FILE": str(pki.client.key),
    }


class Cluster:
    """The role processes; ``report`` is every process's stderr tail, for failure messages."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.procs = procs
        self.by_role: dict[str, subprocess.Popen[str]] = {}
        self.addr: dict[str, str] = {}
        # The invoker's Prometheus endpoint: its run counter shows the UDF ran there.
        self.invoker_metrics = f"127.0.0.1:{free_port()}"

    def report(self, lines: int = 40) -> str:
        parts = []
        for role, proc in self.by_role.items():
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            parts.append(f"--- {role} ({state}) stderr tail:\n{''.join(output_tail(proc, lines))}")
        return "\n".join(parts)


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    """moto's server: the bucket and the two SQS wake-up queues (``<prefix>-tasks``, ``-buffers``)."""
    with moto_server() as endpoint:
        kw = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        }
        boto3.client("s3", **kw).create_bucket(Bucket=BUCKET)
        sqs = boto3.client("sqs", **kw)
        prefix = f"trace-smoke-{uuid.uuid4().hex[:8]}"
        urls = [sqs.create_queue(QueueName=f"{prefix}-{name}")["QueueUrl"] for name in ("tasks", "buffers")]
        role = boto3.client("iam", **kw).create_role(RoleName="trace-task", AssumeRolePolicyDocument="{}")
        yield {
            "endpoint": endpoint,
            "kw": kw,
            "queue_url": urls[0].removesuffix("-tasks"),
            "role_arn": role["Role"]["Arn"],
        }


@pytest.fixture
def node() -> Iterator[AnvilNode]:
    anvil = AnvilNode.start()
    try:
        yield anvil
    finally:
        anvil.stop()


def start_cluster(
    procs: list[subprocess.Popen[str]], settings: Settings, tmp_path: Path, env: dict[str, str]
) -> Cluster:
    cluster = Cluster(procs)
    ports = {role: free_port() for role in ROLES}
    cluster.addr = {role: f"127.0.0.1:{port}" for role, port in ports.items()}
    endpoints = {
        # Where the chart's ConfigMap puts them: every role gets every peer's address.
        "TRACE_DISPATCHER_ADDR": cluster.addr["dispatcher"],
        "TRACE_QUERY_ADDR": cluster.addr["query"],
        "TRACE_INVOKER_ADDR": cluster.addr["invoker"],
        # UDFs reach the task APIs (the Query Service) through the invoker's bridge.
        "TRACE_INVOKER_TASK_ENDPOINT": cluster.addr["query"],
    }
    for role in ROLES:
        own = tmp_path / "roles" / role  # nothing shared on disk between roles
        proc = spawn(
            ["serve", role, "--listen", cluster.addr[role]],
            trace_env(
                settings,
                **env,
                **endpoints,
                TRACE_DATA_DIR=str(own),
                TRACE_TOKEN_KEY_DIR=str(own / "keys"),
                TRACE_WORKER_ID=f"smoke-{role}",
                **({"TRACE_METRICS_LISTEN": cluster.invoker_metrics} if role == "invoker" else {}),
            ),
        )
        procs.append(proc)
        cluster.by_role[role] = proc
    for role, proc in cluster.by_role.items():
        try:
            wait_for_line(proc, rf"{role} serving on (\S+)", timeout=120)
        except AssertionError:
            raise AssertionError(f"{role} did not start\n{cluster.report()}") from None
    return cluster


@pytest.mark.e2e
@pytest.mark.timeout(300)
async def test_every_role_its_own_process_on_aws_adapters_with_mutual_tls_syncs_queries_and_alerts(
    settings: Settings,
    db: asyncpg.Connection,
    node: AnvilNode,
    aws: dict[str, Any],
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
) -> None:
    started = time.monotonic()
    pki = make_ca(tmp_path / "pki")
    key = Ed25519PrivateKey.generate()
    trusted = tmp_path / "bundle_keys"  # the operator's trusted bundle keys (a ConfigMap)
    trusted.mkdir()
    (trusted / "me.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert settings.user_auth.hs256_secret
    env = {
        **tls_env(pki),
        "TRACE_USER_AUTH_ISSUER": settings.user_auth.issuer,
        "TRACE_USER_AUTH_HS256_SECRET": settings.user_auth.hs256_secret,
        "TRACE_DB_POOL_MIN": "1",
        "TRACE_DB_POOL_MAX": "6",
        # S3 (moto) for datasets, scratch and bundles.
        "TRACE_S3_ENDPOINT_URL": aws["endpoint"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "TRACE_DATASETS_URI": f"s3://{BUCKET}/datasets",
        "TRACE_SCRATCH_URI": f"s3://{BUCKET}/scratch",
        "TRACE_BUNDLES_URI": f"s3://{BUCKET}/bundles",
        "TRACE_BUNDLE_KEYS_DIR": str(trusted),
        # SQS (moto) carries the wake-ups.
        "TRACE_QUEUE_BACKEND": "sqs",
        "TRACE_SQS_QUEUE_URL": aws["queue_url"],
        "TRACE_SQS_ENDPOINT_URL": aws["endpoint"],
        "TRACE_SQS_WAIT_SECONDS": "1",
        # The chain, and webhooks to this machine's loopback (off by default in the cluster).
        "TRACE_RPC_POOL_LOCAL_URL": node.url,
        "TRACE_WEBHOOK_ALLOW_HTTP": "1",
        "TRACE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
        # Short loop intervals keep it quick; the story is the same at the defaults.
        "TRACE_DISPATCHER_PLANNER_INTERVAL_SECONDS": "0.05",
        "TRACE_DISPATCHER_HEAD_OBSERVER_INTERVAL_SECONDS": "0.2",
        "TRACE_DISPATCHER_OUTBOX_INTERVAL_SECONDS": "0.05",
        "TRACE_DISPATCHER_RETRY_BASE_SECONDS": "0.1",
        "TRACE_DISPATCHER_RETRY_MAX_SECONDS": "0.5",
        "TRACE_WORKER_POLL_INTERVAL_SECONDS": "0.1",
        "TRACE_SINK_POLL_INTERVAL_SECONDS": "0.1",
        "TRACE_DELIVERY_INTERVAL_SECONDS": "0.05",
        "TRACE_QUERY_SLOTS": "1",
        "TRACE_QUERY_THREADS": "1",
    }
    cluster = start_cluster(procs, settings, tmp_path, env)
    up = time.monotonic() - started
    try:
        await _story(cluster, settings, db, node, aws, pki, key, tmp_path)
    except BaseException as exc:
        raise AssertionError(f"{type(exc).__name__}: {exc}\n{cluster.report()}") from exc
    for role, proc in cluster.by_role.items():
        assert proc.poll() is None, f"{role} exited\n{cluster.report()}"
    story = time.monotonic() - started
    # Every role stops cleanly on SIGTERM, all at once (as a rollout stops pods).
    for proc in cluster.by_role.values():
        proc.terminate()
    stopping = time.monotonic()
    stopped: dict[str, float] = {}
    for role, proc in cluster.by_role.items():
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, f"{role} stopped with {code}\n{cluster.report()}"
        stopped[role] = time.monotonic() - stopping
    stops = ", ".join(f"{role} {t:.1f}" for role, t in stopped.items())
    print(f"cluster up in {up:.1f} s, story done at {story:.1f} s; stopped by (s): {stops}")


async def _story(
    cluster: Cluster,
    settings: Settings,
    db: asyncpg.Connection,
    node: AnvilNode,
    aws: dict[str, Any],
    pki: Pki,
    key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    assert settings.database_url
    pool = await create_pool(settings.database_url, 1, 2)
    try:
        user = await make_user(pool, settings)
    finally:
        await pool.close()
    archive = signed_zip(
        tmp_path / "large_transfers.zip", key, "python", "handler.main", {"handler.py": PYTHON_HANDLER}
    )
    member = ClientTls(ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key)
    trace = await aconnect(cluster.addr["api"], token=user.token, tls=member, query_addr=cluster.addr["query"])
    with webhook_receiver() as receiver:
        async with trace:
            # Bundles on S3: the SDK PUTs the archive to a pre-signed URL, then finalizes.
            bundle = await trace.bundles.upload(archive, name="large_transfers", runtime="python")
            assert bundle.ready, bundle
            stored = boto3.client("s3", **aws["kw"]).list_objects_v2(Bucket=BUCKET, Prefix="bundles/")
            assert stored.get("KeyCount", 0) >= 1, stored

            alert = await trace.alerts.create("large transfers", [receiver.url("/hook")])
            deployed = await trace.dags.deploy(DAG.format(bundle=bundle.id))
            await trace.dags.activate("watch", str(deployed.version.number))

            to = node.accounts[1]
            big = node.send(to=to, value=hex(5 * ETH))
            small = node.send(to=to, value=hex(THRESHOLD_WEI // 1000))
            small_block = int(small["blockNumber"], 16)
            assert small_block > int(big["blockNumber"], 16)

            async def delivered() -> bool:
                # A task failed for good will never deliver: say so now, not at the timeout.
                failed = await db.fetch(
                    "SELECT operator, error_message FROM tasks WHERE status = 'failed' AND next_retry_at IS NULL"
                )
                assert not failed, [dict(r) for r in failed]
                return bool(receiver.delivered())

            await eventually(delivered, timeout=120, interval=0.1)
            await _evaluated(db, small_block, timeout=60)
            await asyncio.sleep(2)  # a late second delivery would have arrived by now
            _assert_one_delivery(receiver, big, small, alert.alert_id)
            events = (await trace.alerts.events(alert.alert_id)).items
            assert [e.tx_hash for e in events] == [big["transactionHash"]], events
            deliveries = (await trace.alerts.deliveries(alert_id=alert.alert_id)).items
            assert [(d.status, d.attempts) for d in deliveries] == [("delivered", 1)], deliveries

            # The synced transactions, through the public API on the query role.
            name = await _transactions_dataset(trace)
            hashes = ", ".join(_hex_literal(t["transactionHash"]) for t in (big, small))
            rows = await trace.query.query(
                {"txs": name}, f"SELECT count(*) FROM txs WHERE transaction_hash IN ({hashes})"
            )
            assert rows.rows == [[2]], rows
    # The UDF ran in the invoker's process (the worker called it over mutual TLS).
    assert _python_runs(cluster.invoker_metrics) >= 1, cluster.invoker_metrics
    await _scoped_credentials_read(aws, db)
    # The wake-ups went through SQS, the datasets and alert batches through S3.
    s3 = boto3.client("s3", **aws["kw"])
    for prefix in ("datasets/", "scratch/"):
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("KeyCount", 0) >= 1, prefix
    assert not await db.fetchval("SELECT count(*) FROM queue_messages"), "wake-ups went through PostgreSQL"


def _python_runs(metrics_addr: str) -> float:
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.findall(r'^trace_invoker_runs_total\{[^}]*runtime="python"[^}]*\} (\S+)$', text, re.MULTILINE)
    return sum(float(v) for v in found)


def _hex_literal(tx_hash: str) -> str:
    # transaction_hash is a BLOB column in cryo's parquet; compare bytes.
    return f"from_hex('{tx_hash.removeprefix('0x')}')"


def _assert_one_delivery(receiver: Receiver, big: dict[str, Any], small: dict[str, Any], alert_id: str) -> None:
    sent = receiver.delivered()
    assert len(sent) == 1, [r.body for r in sent]
    body = sent[0].body
    assert body["tx_hash"] == big["transactionHash"] and body["dedupe_key"] == big["transactionHash"], body
    assert body["payload"] == {"tx_hash": big["transactionHash"], "wei": str(5 * ETH), "runtime": "python"}, body
    assert body["alert_definition_id"] == alert_id
    assert small["transactionHash"] not in json.dumps([r.body for r in receiver.requests])


async def _evaluated(db: asyncpg.Connection, block: int, timeout: float) -> None:
    """The alert_evaluate of the range holding ``block`` completed (the small transfer was
    looked at and found too small: no delivery for it is not merely "not yet")."""

    async def done() -> bool:
        n = await db.fetchval(
            "SELECT count(*) FROM tasks WHERE operator = 'alert_evaluate' AND status = 'completed'"
            " AND (config->>'range_start')::bigint <= $1 AND (config->>'range_end')::bigint > $1",
            block,
        )
        return bool(n)

    await eventually(done, timeout=timeout, interval=0.2)


async def _transactions_dataset(trace: Any) -> str:
    """The chain_sync stream's dataset, published under a name of the user's choosing."""
    found = [d async for d in trace.datasets.iterate() if d.chain_sync_stream is not None]
    assert found, "no chain_sync dataset listed"
    ds = found[0]
    if not ds.published:
        await trace.datasets.publish(
            "transactions", ChainSyncStreamSource(ds.chain_sync_stream.sync_name, ds.chain_sync_stream.dataset_key)
        )
        return "transactions"
    return str(ds.published_names[0] if ds.published_names else ds.name)


async def _scoped_credentials_read(aws: dict[str, Any], db: asyncpg.Connection) -> None:
    """STS: scoped credentials for a prefix of a dataset the sync wrote, and a read of one of
    its objects with them (moto checks the credentials exist, not the session policy: the
    policy's text is proven in tests/unit/test_sts_policy). Nothing in the platform calls
    AssumeRole yet, so this is the adapter alone."""
    s3 = boto3.client("s3", **aws["kw"])
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix="datasets/")["Contents"]
    # The largest file: a range holding a transfer (block 0's range has no transactions).
    parquet = max((o for o in objects if o["Key"].endswith(".parquet")), key=lambda o: o["Size"])["Key"]
    prefix = f"s3://{BUCKET}/{parquet.rsplit('/', 1)[0]}/"
    claims = CapabilityClaims(
        org_id="org", task_id=str(uuid.uuid4()), attempt=1, s3_read_prefixes=(prefix,), expires_at=time.time() + 1200
    )
    store = ObjectStoreSettings(s3_access_key_id="testing", s3_secret_access_key="testing")
    sts = await StsCredentials.open(Settings(object_store=store), aws["role_arn"], aws["endpoint"])
    try:
        creds = await sts.for_task(claims)
    finally:
        await sts.close()
    scoped = boto3.client(
        "s3",
        endpoint_url=aws["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
    )
    body = scoped.get_object(Bucket=BUCKET, Key=parquet)["Body"].read()
    assert pq.read_metadata(pa.BufferReader(body)).num_rows >= 1
