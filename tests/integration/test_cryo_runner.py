"""The Cryo runner against a real anvil node: real transactions and an event log in, Parquet out."""

from __future__ import annotations

import hashlib
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.anvil import EMITTER_TOPIC, AnvilNode, free_port
from trace_platform.adapters.extract.cryo_runner import CryoRequest, CryoRunner, StagedOutput
from trace_platform.core.errors import FailedPrecondition, Unavailable
from trace_platform.core.manifest import build_manifest, derive_dataset_version, parse_manifest
from trace_platform.core.planner import BlockRange

pytestmark = pytest.mark.integration


@dataclass
class Chain:
    node: AnvilNode
    head: int  # last block number (inclusive)
    tx_hashes: list[str]
    emitter: str
    log_blocks: list[int]


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    node = AnvilNode.start()
    try:
        emitter = node.deploy_log_emitter()
        receipts = [node.send(to=emitter, gas=hex(100_000)) for _ in range(2)]
        receipts.append(node.send(to=node.accounts[1], value=hex(10**18)))
        node.mine(5)
        txs = [r["transactionHash"] for r in receipts]
        deploy_tx = node.rpc("eth_getBlockByNumber", "0x1", False)["transactions"]
        log_blocks = [int(r["blockNumber"], 16) for r in receipts[:2]]
        yield Chain(node, node.block_number(), deploy_tx + txs, emitter, log_blocks)
    finally:
        node.stop()


def request(chain: Chain, dataset: str, block_range: BlockRange, **kw: object) -> CryoRequest:
    args: dict[str, object] = {"chain_id": 31337, **kw}
    return CryoRequest(str(uuid.uuid4()), 1, dataset, block_range, chain.node.url, **args)  # type: ignore[arg-type]


def entries(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def read(staged: StagedOutput) -> list[dict[str, object]]:
    assert len(staged.files) == 1
    return pq.read_table(staged.files[0].path).to_pylist()


async def test_blocks_transactions_and_logs_over_the_whole_chain(chain: Chain, tmp_path: Path) -> None:
    runner = CryoRunner(tmp_path / "staging")
    whole = BlockRange(0, chain.head + 1)
    timings = {}
    outputs = {}
    for dataset in ("blocks", "transactions", "logs"):
        started = time.perf_counter()
        outputs[dataset] = await runner.run(request(chain, dataset, whole))
        timings[dataset] = round(time.perf_counter() - started, 3)
    print(f"cryo runner wall seconds per dataset over {len(whole)} blocks: {timings}")

    blocks = read(outputs["blocks"])
    assert [b["block_number"] for b in blocks] == list(range(chain.head + 1))
    for b in blocks:
        expected = chain.node.rpc("eth_getBlockByNumber", hex(b["block_number"]), False)["hash"]
        assert "0x" + b["block_hash"].hex() == expected  # type: ignore[union-attr]

    txs = read(outputs["transactions"])
    assert sorted("0x" + t["transaction_hash"].hex() for t in txs) == sorted(chain.tx_hashes)  # type: ignore[union-attr]

    logs = read(outputs["logs"])
    assert len(logs) == len(chain.node.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(chain.head)})) == 2
    assert [lg["block_number"] for lg in logs] == chain.log_blocks
    for lg in logs:
        assert "0x" + lg["address"].hex() == chain.emitter  # type: ignore[union-attr]
        assert "0x" + lg["topic0"].hex() == EMITTER_TOPIC  # type: ignore[union-attr]

    # Names keep Cryo's {start}_to_{end} (end inclusive); staging is private; the manifest describes the bytes.
    staged = outputs["logs"]
    (only,) = staged.files
    assert only.path.name == f"network_31337__logs__00000000_to_{chain.head:08d}.parquet"
    assert only.block_range == whole
    assert stat.S_IMODE(staged.directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "staging").stat().st_mode) == 0o700
    assert only.object.sha256 == hashlib.sha256(only.path.read_bytes()).hexdigest()
    assert only.object.row_count == 2 and only.object.size_bytes == only.path.stat().st_size
    ds = str(uuid.uuid4())
    manifest = build_manifest(ds, derive_dataset_version(ds, 0, whole.end, "cryo_ingest.logs:v1"), [only.object])
    assert parse_manifest(manifest.to_json(), expected_prefix=manifest.prefix) == manifest

    for out in outputs.values():
        out.cleanup()
        assert not out.directory.exists() and not out.directory.parent.exists()


async def test_a_sub_range_yields_exactly_its_blocks(chain: Chain, tmp_path: Path) -> None:
    staged = await CryoRunner(tmp_path).run(request(chain, "blocks", BlockRange(2, 5)))
    assert [b["block_number"] for b in read(staged)] == [2, 3, 4]
    assert staged.files[0].path.name.endswith("__00000002_to_00000004.parquet")
    empty = await CryoRunner(tmp_path).run(request(chain, "logs", BlockRange(chain.head, chain.head + 1)))
    assert read(empty) == [] and empty.files[0].object.row_count == 0


async def test_unreachable_rpc_fails_the_attempt_and_cleans_staging(chain: Chain, tmp_path: Path) -> None:
    runner = CryoRunner(tmp_path)
    req = CryoRequest(str(uuid.uuid4()), 3, "blocks", BlockRange(0, 5), f"http://127.0.0.1:{free_port()}/k3y")
    with pytest.raises(Unavailable) as err:
        await runner.run(req)
    assert err.value.reason == "CRYO_FAILED" and err.value.metadata["category"] == "rpc"
    assert "attempt failed" in err.value.message and "k3y" not in err.value.message
    assert not runner.staging_dir(req.task_id, 3).exists()
    assert entries(tmp_path) == []


async def test_errored_chunks_fail_the_attempt(chain: Chain, tmp_path: Path) -> None:
    # Blocks past the head: Cryo does not raise, it counts an errored chunk.
    req = request(chain, "blocks", BlockRange(chain.head + 100, chain.head + 110), max_retries=0)
    with pytest.raises(Unavailable) as err:
        await CryoRunner(tmp_path).run(req)
    assert err.value.reason == "CRYO_CHUNKS_ERRORED"
    assert entries(tmp_path) == []


async def test_wrong_chain_is_refused(chain: Chain, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition) as err:
        await CryoRunner(tmp_path).run(request(chain, "blocks", BlockRange(0, 3), chain_id=1))
    assert err.value.reason == "CHAIN_ID_MISMATCH"
    assert entries(tmp_path) == []


async def test_a_redelivered_attempt_starts_from_a_clean_directory(chain: Chain, tmp_path: Path) -> None:
    runner = CryoRunner(tmp_path)
    req = request(chain, "blocks", BlockRange(0, 3))
    leftover = runner.staging_dir(req.task_id, req.attempt)
    leftover.mkdir(parents=True)
    (leftover / "network_31337__blocks__00000000_to_00000099.parquet").write_bytes(b"junk from a crash")
    staged = await runner.run(req)
    assert [f.path.name for f in staged.files] == ["network_31337__blocks__00000000_to_00000002.parquet"]
