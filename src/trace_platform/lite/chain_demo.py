"""The README's one-command demo: a local anvil chain synced by Trace and queried.

It starts anvil (the npm package's binary, stopped by its PID), makes blocks holding
real transactions and event logs, applies a chain_sync job for them, shows progress
while the platform syncs with Cryo, and prints query results from the Query Service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from trace_platform.clients.api.query import ApiQueryClient
from trace_platform.clients.chain_sync import ChainSyncClient
from trace_platform.core.config import LITE_ORG_ID
from trace_platform.lite.anvil import AnvilNode
from trace_platform.views.live_status import ProgressView, watch
from trace_platform.views.output import render_table

DEMO_POOL = "demo"
DEMO_NAME = "demo"
DEMO_BLOCKS = 300


def demo_yaml(to_block: int) -> str:
    streams = "".join(
        f"  {key}:\n    cryo_dataset_name: {key}\n    rpc_pool: {DEMO_POOL}\n    chunk_size: 100\n    max_inflight: 2\n"
        for key in ("blocks", "transactions", "logs")
    )
    return (
        f"kind: chain_sync\nname: {DEMO_NAME}\nchain_id: 31337\n"
        f"mode:\n  kind: fixed_target\n  from_block: 0\n  to_block: {to_block}\n"
        f"streams:\n{streams}"
    )


def make_chain(node: AnvilNode, blocks: int = DEMO_BLOCKS) -> int:
    """Contract calls that emit logs and plain transfers, then empty blocks up to ``blocks``."""
    emitter = node.deploy_log_emitter()
    for i in range(12):
        node.send(to=emitter, gas=hex(100_000))
        node.send(to=node.accounts[1 + i % 5], value=hex(10**16 * (i + 1)))
    node.mine(blocks - 1 - node.block_number())
    return node.block_number() + 1  # end-exclusive target: every block synced


async def run_chain_demo(
    addr: str, admin_token: str, user_token: str, to_block: int, echo: Callable[[str], None], timeout: float = 300.0
) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        admin = ChainSyncClient(channel, admin_token=admin_token)
        query = ApiQueryClient(channel, token=user_token)
        applied = await admin.apply(LITE_ORG_ID, demo_yaml(to_block))
        echo(f"applied chain_sync {applied.name!r}: blocks [0, {to_block}) of the local anvil chain")
        # The same live view as `trace lite up` and `trace status --watch`.
        async with asyncio.timeout(timeout):
            with ProgressView() as view:
                await watch(
                    lambda: admin.status(LITE_ORG_ID, DEMO_NAME),
                    view,
                    interval=0.5,
                    until=lambda jobs: bool(jobs) and jobs[0].completed,
                )
        for dataset, sql in (
            (
                f"{DEMO_NAME}.blocks",
                "SELECT count(*) AS blocks, min(block_number) AS first, max(block_number) AS last FROM dataset",
            ),
            (f"{DEMO_NAME}.transactions", "SELECT count(*) AS transactions FROM dataset"),
            (f"{DEMO_NAME}.logs", "SELECT count(*) AS logs, count(DISTINCT address) AS contracts FROM dataset"),
        ):
            echo(f'\n$ trace query --dataset {dataset} "{sql}"')
            echo(render_table(await query.query(dataset, sql)))

