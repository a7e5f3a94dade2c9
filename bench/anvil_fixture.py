"""A cached anvil chain for the chain_sync benchmark: N blocks with real transactions and logs.

Mining is slow on anvil and gets slower as the chain grows (10,000 blocks take 80 to
100 s here), so the chain is made once, dumped with ``anvil_dumpState`` and reused:
later runs start anvil with ``--load-state``, which keeps every block, transaction,
receipt and log (checked by ``verify``), so Cryo's ``eth_getBlockByNumber`` /
``eth_getLogs`` calls see the whole history. ``--prune-history`` (the ``AnvilNode``
default) only drops historical *state*, which Cryo's blocks, transactions and logs
datasets do not read.

The cache lives under the system temp dir (``$TMPDIR/trace-bench-anvil/``), never in
the repository. Run on its own to build or check a fixture:

    .venv/bin/python bench/anvil_fixture.py --blocks 10000
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from trace_platform.lite.anvil import AnvilNode

FIXTURE_VERSION = 1
BUSY_BLOCKS = 100  # blocks holding transactions, spread evenly over the chain
CALLS_PER_BUSY_BLOCK = 3  # log-emitting contract calls (one LOG1 each)
TRANSFERS_PER_BUSY_BLOCK = 2  # plain value transfers


@dataclass(frozen=True)
class Fixture:
    blocks: int  # block numbers 0 .. blocks - 1 exist; sync [0, blocks)
    transactions: int
    logs: int
    state_path: Path


def cache_dir() -> Path:
    return Path(os.environ.get("TRACE_BENCH_CACHE", Path(tempfile.gettempdir()) / "trace-bench-anvil"))


def _paths(blocks: int) -> tuple[Path, Path]:
    stem = cache_dir() / f"chain-v{FIXTURE_VERSION}-{blocks}"
    return stem.with_suffix(".state.json"), stem.with_suffix(".meta.json")


def build(blocks: int, echo: bool = True) -> Fixture:
    """Mine the chain in a fresh anvil and dump it (slow: once per block count)."""
    if blocks < 2 * BUSY_BLOCKS:
        raise ValueError(f"--blocks must be at least {2 * BUSY_BLOCKS}")
    state_path, meta_path = _paths(blocks)
    started = time.perf_counter()
    node = AnvilNode.start()
    try:
        emitter = node.deploy_log_emitter()  # block 1, one transaction, no log
        txs, logs = 1, 0
        node.rpc("evm_setAutomine", False)
        spacing = blocks // BUSY_BLOCKS
        for i in range(BUSY_BLOCKS):
            target = 2 + i * spacing  # the busy block's number
            node.mine(target - 1 - node.block_number())
            for _ in range(CALLS_PER_BUSY_BLOCK):
                node.rpc("eth_sendTransaction", {"from": node.accounts[0], "to": emitter, "gas": hex(100_000)})
            for k in range(TRANSFERS_PER_BUSY_BLOCK):
                to = node.accounts[1 + (i + k) % 5]
                node.rpc("eth_sendTransaction", {"from": node.accounts[0], "to": to, "value": hex(10**15 * (i + 1))})
            node.rpc("evm_mine")
            mined = node.rpc("eth_getBlockByNumber", hex(target), False)
            expected = CALLS_PER_BUSY_BLOCK + TRANSFERS_PER_BUSY_BLOCK
            if mined is None or len(mined["transactions"]) != expected:
                raise RuntimeError(f"busy block {target} does not hold {expected} transactions")
            txs += expected
            logs += CALLS_PER_BUSY_BLOCK
            if echo and i % 20 == 19:
                print(f"  fixture: {node.block_number() + 1}/{blocks} blocks", flush=True)
        node.mine(blocks - 1 - node.block_number())
        if node.block_number() != blocks - 1:
            raise RuntimeError("fixture chain has the wrong length")
        dumped = str(node.rpc("anvil_dumpState", timeout=300.0))
    finally:
        node.stop()
    raw = bytes.fromhex(dumped.removeprefix("0x"))
    with contextlib.suppress(gzip.BadGzipFile):  # some anvil versions return plain JSON
        raw = gzip.decompress(raw)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = state_path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    tmp.replace(state_path)
    fixture = Fixture(blocks, txs, logs, state_path)
    meta_path.write_text(json.dumps({"blocks": blocks, "transactions": txs, "logs": logs}))
    if echo:
        print(f"  fixture: built {blocks} blocks in {time.perf_counter() - started:.0f} s -> {state_path}")
    return fixture


def ensure(blocks: int, echo: bool = True) -> Fixture:
    """The cached fixture for ``blocks``, built first if missing."""
    state_path, meta_path = _paths(blocks)
    if state_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return Fixture(int(meta["blocks"]), int(meta["transactions"]), int(meta["logs"]), state_path)
    if echo:
        print(f"  fixture: no cached {blocks}-block chain; mining one (slow, once)", flush=True)
    return build(blocks, echo)


def start_node(fixture: Fixture) -> AnvilNode:
    return AnvilNode.start("--load-state", str(fixture.state_path), timeout=120.0)


def verify(node: AnvilNode, fixture: Fixture) -> None:
    """The loaded node serves the whole history: head, first/middle/last blocks, logs."""
    if node.block_number() != fixture.blocks - 1:
        raise RuntimeError(f"loaded chain head is {node.block_number()}, expected {fixture.blocks - 1}")
    for n in (0, 1, 2, fixture.blocks // 2, fixture.blocks - 1):
        if node.rpc("eth_getBlockByNumber", hex(n), False) is None:
            raise RuntimeError(f"loaded chain lost block {n}: --load-state did not keep history")
    busy = node.rpc("eth_getBlockByNumber", hex(2), True)
    if len(busy["transactions"]) != CALLS_PER_BUSY_BLOCK + TRANSFERS_PER_BUSY_BLOCK:
        raise RuntimeError("loaded chain lost the transactions of block 2")
    found = node.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(fixture.blocks - 1)}, timeout=60.0)
    if len(found) != fixture.logs:
        raise RuntimeError(f"loaded chain serves {len(found)} logs, expected {fixture.logs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--rebuild", action="store_true", help="mine the chain again even if cached")
    args = parser.parse_args()
    fixture = build(args.blocks) if args.rebuild else ensure(args.blocks)
    started = time.perf_counter()
    node = start_node(fixture)
    try:
        loaded = time.perf_counter() - started
        verify(node, fixture)
    finally:
        node.stop()
    print(
        f"fixture ok: {fixture.blocks} blocks, {fixture.transactions} transactions, {fixture.logs} logs; "
        f"--load-state took {loaded:.1f} s; {fixture.state_path} ({fixture.state_path.stat().st_size >> 20} MiB)"
    )


if __name__ == "__main__":
    main()
