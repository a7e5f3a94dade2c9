"""`trace verify` / VerifyChainSync against a real anvil, real Cryo and PostgreSQL: a synced
job verifies clean; a tampered published block, a reorg on the node and a range that is
not published are each reported block by block; bad requests get their status and reason;
the real CLI exits 0 when clean and 1 with every difference (also as --json)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.anvil import AnvilNode
from tests.conftest import eventually
from tests.integration.conftest import ORG
from tests.integration.test_chain_sync import _wait_complete, sync_yaml
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.chain_sync import ChainSyncClient, pb
from trace_platform.core.chain_sync import VerifySchedule, parse_chain_sync, spec_from_dict
from trace_platform.core.config import Settings
from trace_platform.core.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from trace_platform.core.manifest import MANIFEST_NAME
from trace_platform.core.models import StorageRef

BLOCKS = 60  # sync_yaml's fixed target: [0, 60), three streams, chunks 20 / 25 / 30
NO_BLOCKS_STREAM = """
kind: chain_sync
name: txonly
chain_id: 31337
mode: {kind: fixed_target, from_block: 0, to_block: 10}
streams:
  transactions: {cryo_dataset_name: transactions, rpc_pool: local, chunk_size: 10, max_inflight: 1}
"""


def _fill(node: AnvilNode) -> None:
    emitter = node.deploy_log_emitter()
    for _ in range(3):
        node.send(to=emitter, gas=hex(100_000))
    node.send(to=node.accounts[1], value=hex(10**18))
    node.mine(BLOCKS + 10 - node.block_number())


@pytest.fixture(scope="module")
def node() -> Iterator[AnvilNode]:
    """Shared by the tests that do not change the chain."""
    n = AnvilNode.start()
    try:
        _fill(n)
        yield n
    finally:
        n.stop()


async def _start(settings: Settings, url: str) -> RunningPlatform:
    fast = replace(
        settings,
        rpc_pools={"local": url},
        dispatcher=replace(settings.dispatcher, planner_interval_seconds=0.05, head_observer_interval_seconds=0.2),
    )
    return await start_platform(fast, migrate=False, run_worker=True)


@pytest.fixture
async def synced(settings: Settings, node: AnvilNode) -> AsyncIterator[tuple[RunningPlatform, ChainSyncClient]]:
    running = await _start(settings, node.url)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            await admin.apply(ORG, sync_yaml("v"))
            await _wait_complete(admin, "v")
            yield running, admin
    finally:
        await running.stop(grace=0.5)


def admin_token(settings: Settings) -> str:
    assert settings.admin_token
    return settings.admin_token


def _diffs(resp: pb.VerifyChainSyncResponse) -> list[tuple[int, str, str, str, str]]:
    return [(d.block_number, d.dataset_key, d.field, d.published, d.node) for d in resp.differences]


async def _cli(running: RunningPlatform, settings: Settings, *args: str, command: str = "verify") -> tuple[int, str]:
    """The real `trace` CLI in a subprocess (the server runs on this loop: never block it)."""
    assert settings.admin_token
    env = {**os.environ, "TRACE_ADMIN_TOKEN": settings.admin_token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trace_platform",
        command,
        *args,
        "--addr",
        running.addr,
        "--org",
        ORG,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()


async def test_synced_job_verifies_clean_through_rpc_and_cli(
    synced: tuple[RunningPlatform, ChainSyncClient], settings: Settings
) -> None:
    running, admin = synced
    resp = await admin.verify(ORG, "v")  # default: the published prefix
    assert (resp.from_block, resp.to_block, resp.blocks_checked) == (0, BLOCKS, BLOCKS)
    assert resp.difference_count == 0 and not resp.differences
    # A range that starts inside a version and ends inside another (parent link across the call's start).
    part = await admin.verify(ORG, "v", 23, 47)
    assert (part.from_block, part.to_block, part.difference_count) == (23, 47, 0)

    code, text = await _cli(running, settings, "v")
    assert code == 0, text
    assert f"[0, {BLOCKS}) matches the node" in text
    code, text = await _cli(running, settings, "v", "--from", "10", "--to", "30", "--json")
    assert code == 0, text
    doc = json.loads(text)
    assert (doc["from_block"], doc["to_block"], doc["difference_count"], doc["differences"]) == (10, 30, 0, [])


async def test_tampered_block_hash_is_reported(
    synced: tuple[RunningPlatform, ChainSyncClient], settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    running, admin = synced
    real = node.rpc("eth_getBlockByNumber", hex(25), False)["hash"]
    forged = "0x" + "ab" * 32
    _rewrite_block_hash(await _version_dir(db, "blocks", 25), 25, bytes.fromhex(forged[2:]))

    resp = await admin.verify(ORG, "v")
    assert _diffs(resp) == [
        (25, "blocks", "block_hash", forged, real),
        (26, "blocks", "parent_link", forged, real),  # 26 builds on the real 25, not on what is published
    ]
    code, text = await _cli(running, settings, "v", "--json")
    assert code == 1, text
    doc = json.loads(text)
    assert doc["difference_count"] == 2
    assert doc["differences"][0] == {
        "block_number": 25,
        "dataset_key": "blocks",
        "field": "block_hash",
        "published": forged,
        "node": real,
    }
    code, text = await _cli(running, settings, "v", "--from", "20", "--to", "26")
    assert code == 1 and "block 25  blocks  block_hash" in text and forged in text and real in text, text

    # The last block of a version ([20, 40)): the link is checked across the version boundary,
    # and across the start of a call that begins right after it.
    real39 = node.rpc("eth_getBlockByNumber", hex(39), False)["hash"]
    forged39 = "0x" + "ee" * 32
    _rewrite_block_hash(await _version_dir(db, "blocks", 39), 39, bytes.fromhex(forged39[2:]))
    await running.stop(grace=0.5)  # a running server caches the version's checked manifest
    restarted = await _start(settings, node.url)
    try:
        async with grpc.aio.insecure_channel(restarted.addr) as ch:
            again = ChainSyncClient(ch, admin_token=admin_token(settings))
            assert [d for d in _diffs(await again.verify(ORG, "v")) if d[0] in (39, 40)] == [
                (39, "blocks", "block_hash", forged39, real39),
                (40, "blocks", "parent_link", forged39, real39),
            ]
            assert _diffs(await again.verify(ORG, "v", 40, 50)) == [(40, "blocks", "parent_link", forged39, real39)]
    finally:
        await restarted.stop(grace=0.5)


async def test_unpublished_range_is_reported_as_missing_blocks(
    synced: tuple[RunningPlatform, ChainSyncClient], db: asyncpg.Connection
) -> None:
    _, admin = synced
    # The ledger no longer says the blocks range [20, 40) is complete: no query reads it, so neither does verify.
    changed = await db.execute(
        "UPDATE chain_sync_ranges SET status = 'scheduled', dataset_version = NULL "
        "WHERE dataset_key = 'blocks' AND range_start = 20 AND range_end = 40"
    )
    assert changed == "UPDATE 1"
    default = await admin.verify(ORG, "v")  # the published prefix ends where the gap starts
    assert (default.from_block, default.to_block, default.difference_count) == (0, 20, 0)
    resp = await admin.verify(ORG, "v", 0, BLOCKS)
    assert _diffs(resp) == [(n, "blocks", "missing", "", "") for n in range(20, 40)]
    # Beyond what is published: every stream is missing there.
    beyond = await admin.verify(ORG, "v", BLOCKS - 1, BLOCKS + 2)
    missing = {(d.block_number, d.dataset_key) for d in beyond.differences if d.field == "missing"}
    assert missing == {(n, k) for n in (BLOCKS, BLOCKS + 1) for k in ("blocks", "transactions", "logs")}
    assert beyond.difference_count == len(missing)


async def test_reorg_on_the_node_is_reported(settings: Settings) -> None:
    reorging = AnvilNode.start(prune_history=False)  # anvil_reorg needs the fork point's state
    try:
        _fill(reorging)
        before = [reorging.rpc("eth_getBlockByNumber", hex(n), False) for n in range(BLOCKS)]
        running = await _start(settings, reorging.url)
        try:
            async with grpc.aio.insecure_channel(running.addr) as ch:
                assert settings.admin_token
                admin = ChainSyncClient(ch, admin_token=settings.admin_token)
                await admin.apply(ORG, sync_yaml("v"))
                await _wait_complete(admin, "v")
                assert (await admin.verify(ORG, "v")).difference_count == 0
                head = reorging.block_number()
                depth = head - (BLOCKS - 5) + 1  # replaces blocks BLOCKS-5 .. head
                tx = {"from": reorging.accounts[2], "to": reorging.accounts[3], "value": hex(10**15)}
                reorging.rpc("anvil_reorg", depth, [[tx, 0]])
                after = {n: reorging.rpc("eth_getBlockByNumber", hex(n), False) for n in range(BLOCKS - 5, BLOCKS)}
                resp = await admin.verify(ORG, "v")
        finally:
            await running.stop(grace=0.5)
    finally:
        reorging.stop()
    first = BLOCKS - 5
    assert all(after[n]["hash"] != before[n]["hash"] for n in after)
    by_field = {(d.block_number, d.field): d for d in resp.differences}
    for n in range(first, BLOCKS):
        d = by_field[(n, "block_hash")]
        assert (d.published, d.node) == (before[n]["hash"], after[n]["hash"])
    assert (first, "parent_link") not in by_field  # the fork point's child still builds on the common ancestor
    for n in range(first + 1, BLOCKS):
        d = by_field[(n, "parent_link")]
        assert (d.published, d.node) == (before[n - 1]["hash"], after[n - 1]["hash"])
    assert by_field[(first, "transaction_count")].node == "1"  # the reorg's transaction, in its first block
    assert not [d for d in resp.differences if d.block_number < first]


async def test_bad_requests_get_their_status_and_reason(settings: Settings, node: AnvilNode) -> None:
    running = await _start(settings, node.url)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            with pytest.raises(NotFound) as nf:
                await admin.verify(ORG, "nope")
            assert nf.value.reason == "CHAIN_SYNC_NOT_FOUND"
            await admin.apply(ORG, NO_BLOCKS_STREAM)
            with pytest.raises(FailedPrecondition) as fp:
                await admin.verify(ORG, "txonly", 0, 10)
            assert fp.value.reason == "CHAIN_SYNC_NO_BLOCKS_STREAM"
            await admin.apply(ORG, sync_yaml("big"))
            with pytest.raises(InvalidArgument) as big:
                await admin.verify(ORG, "big", 0, 10_001)
            assert big.value.reason == "VERIFY_RANGE_TOO_LARGE"
            with pytest.raises(InvalidArgument) as empty:
                await admin.verify(ORG, "big", 10, 10)
            assert empty.value.reason == "INVALID_BLOCK_RANGE"
            with pytest.raises(PermissionDenied) as denied:
                await ChainSyncClient(ch, admin_token="wrong").verify(ORG, "big", 0, 10)
            assert denied.value.reason == "CREDENTIAL_INVALID"
            code, text = await _cli(running, settings, "nope")
            assert code == 1 and "CHAIN_SYNC_NOT_FOUND" in text, text
    finally:
        await running.stop(grace=0.5)


async def test_scheduled_check_records_its_latest_result_shown_by_status(
    settings: Settings, node: AnvilNode, db: asyncpg.Connection
) -> None:
    running = await _start(settings, node.url)
    try:
        async with grpc.aio.insecure_channel(running.addr) as ch:
            assert settings.admin_token
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            await admin.apply(ORG, sync_yaml("v") + "verify: {every_seconds: 1, last_blocks: 30}\n")
            await _wait_complete(admin, "v")

            async def checked(want_differences: int) -> pb.ChainSyncVerification | None:
                v = (await admin.status(ORG, "v"))[0].last_verification
                done = (v.from_block, v.to_block, v.difference_count, v.error) == (30, BLOCKS, want_differences, "")
                return v if done else None

            clean = await eventually(lambda: checked(0), timeout=30, interval=0.2)
            assert not clean.differences
            code, text = await _cli(running, settings, "v", command="status")
            assert code == 0 and f"verify: [30, {BLOCKS}) matches the node" in text, text

            real = node.rpc("eth_getBlockByNumber", hex(45), False)["hash"]
            forged = "0x" + "cd" * 32
            # A fresh platform reads the rewritten object (a running one caches a version's manifest).
            await running.stop(grace=0.5)
            _rewrite_block_hash(await _version_dir(db, "blocks", 45), 45, bytes.fromhex(forged[2:]))
            running = await _start(settings, node.url)
        async with grpc.aio.insecure_channel(running.addr) as ch:
            admin = ChainSyncClient(ch, admin_token=settings.admin_token)
            found = await eventually(lambda: checked(2), timeout=30, interval=0.2)
            assert [(d.block_number, d.field, d.published, d.node) for d in found.differences] == [
                (45, "block_hash", forged, real),
                (46, "parent_link", forged, real),
            ]
            code, text = await _cli(running, settings, "v", command="status")
            assert "2 difference(s)" in text and "block 45 blocks block_hash" in text, text
    finally:
        await running.stop(grace=0.5)


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("verify: {every_seconds: 0, last_blocks: 10}", "verify.every_seconds"),
        ("verify: {every_seconds: 60, last_blocks: 10001}", "verify.last_blocks"),
        ("verify: {every_seconds: 60, last_blocks: 10, colour: red}", "verify.colour"),
        ("verify: {every_seconds: 60}", "verify.last_blocks"),
        ("verify: 600", "verify"),
    ],
)
def test_verify_section_is_strict(section: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as bad:
        parse_chain_sync(sync_yaml("v") + section + "\n")
    assert bad.value.metadata.get("field") == field


def test_verify_section_is_in_the_hash_only_when_present() -> None:
    plain = parse_chain_sync(sync_yaml("v"))
    scheduled = parse_chain_sync(sync_yaml("v") + "verify: {every_seconds: 600, last_blocks: 1000}\n")
    assert plain.verify is None and "verify" not in plain.canonical()
    assert scheduled.verify == VerifySchedule(every_seconds=600, last_blocks=1000)
    assert scheduled.yaml_hash != plain.yaml_hash
    assert spec_from_dict(scheduled.canonical()) == scheduled  # what apply stores reads back the same


# --- tampering, honestly: rewrite the published file and its manifest entry ------------------


async def _version_dir(db: asyncpg.Connection, dataset_key: str, block: int) -> Path:
    raw = await db.fetchval(
        "SELECT v.storage_ref::text FROM chain_sync_ranges r JOIN dataset_versions v "
        "ON v.dataset_version = r.dataset_version AND v.producer_task_id = r.task_id "
        "WHERE r.dataset_key = $1 AND r.range_start <= $2 AND r.range_end > $2 AND r.status = 'completed'",
        dataset_key,
        block,
    )
    ref = StorageRef.from_dict(json.loads(raw))
    assert ref.scheme == "file"
    return Path(ref.prefix)


def _rewrite_block_hash(directory: Path, block: int, forged: bytes) -> None:
    manifest_path = directory / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_bytes())
    for obj in manifest["objects"]:
        path = directory / obj["key"]
        table = pq.read_table(path)
        numbers = table.column("block_number").to_pylist()
        if block not in numbers:
            continue
        hashes = table.column("block_hash").to_pylist()
        hashes[numbers.index(block)] = forged
        i = table.schema.get_field_index("block_hash")
        table = table.set_column(i, table.schema.field(i), pa.array(hashes, type=table.schema.field(i).type))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        data = buf.getvalue()
        path.write_bytes(data)
        obj["size_bytes"] = len(data)
        obj["sha256"] = hashlib.sha256(data).hexdigest()
        manifest_path.write_text(json.dumps(manifest))
        return
    raise AssertionError(f"block {block} is in no object of {directory}")
