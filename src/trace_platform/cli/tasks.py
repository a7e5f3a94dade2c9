"""`trace task ...` and `trace demo`: submit and inspect tasks through the Dispatcher."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trace_platform.cli.common import CliError, addr_option, admin_token, data_dir_option, run
from trace_platform.core.defaults import LITE_ORG_ID
from trace_platform.views.output import message_dict

if TYPE_CHECKING:  # grpc and the client are imported when a command runs
    from trace_platform.clients.dispatcher import DispatcherClient
    from trace_platform.gen.trace.v1 import dispatcher_pb2

LITE_ORG = LITE_ORG_ID


async def wait_terminal(client: DispatcherClient, task_id: str, timeout: float) -> dispatcher_pb2.GetTaskResponse:
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get_task(task_id)
        if resp.terminal or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.1)


def describe(resp: dispatcher_pb2.GetTaskResponse) -> dict[str, object]:
    return message_dict(resp, all_fields=False)


async def submit_and_wait(
    addr: str, token: str, operator: str, config: dict[str, object], wait: float
) -> dict[str, object]:
    from trace_platform.clients.channel import user_channel
    from trace_platform.clients.dispatcher import DispatcherClient

    async with user_channel(addr) as channel:
        client = DispatcherClient(channel, admin_token=token)
        task_id = await client.create_task(LITE_ORG, operator, config)
        if wait <= 0:
            return {"task": {"task_id": task_id}}
        return describe(await wait_terminal(client, task_id, wait))


@click.group("task")
def task_group() -> None:
    """Submit and inspect tasks."""


@task_group.command("submit")
@click.argument("operator")
@click.option("--config", "config_json", default="{}", help="Operator config as a JSON object.")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for a terminal state.")
@addr_option
@data_dir_option
def submit(operator: str, config_json: str, wait: float, addr: str, data_dir: Path) -> None:
    """Create a task for OPERATOR and print it."""
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--config") from None
    click.echo(json.dumps(run(submit_and_wait(addr, admin_token(data_dir), operator, config, wait), addr), indent=2))


@task_group.command("get")
@click.argument("task_id")
@addr_option
@data_dir_option
def get(task_id: str, addr: str, data_dir: Path) -> None:
    """Print a task's state and attempts."""
    import uuid

    try:
        uuid.UUID(task_id)
    except ValueError:
        raise click.BadParameter("must be a UUID", param_hint="TASK_ID") from None

    token = admin_token(data_dir)
    from trace_platform.clients.channel import user_channel
    from trace_platform.clients.dispatcher import DispatcherClient

    async def fetch() -> dict[str, object]:
        async with user_channel(addr) as channel:
            return describe(await DispatcherClient(channel, admin_token=token).get_task(task_id))

    click.echo(json.dumps(run(fetch(), addr), indent=2))


@click.command("demo")
@addr_option
@data_dir_option
def demo(addr: str, data_dir: Path) -> None:
    """Run a demo task on a running `trace lite up` and print how it went."""
    run(run_demo(addr, admin_token(data_dir)), addr)


async def run_demo(addr: str, token: str) -> None:
    """Submit a short demo task, wait for it, print it; fail unless it completed.

    Shared by `trace demo` and `trace lite up --demo`."""
    started = time.monotonic()
    result = await submit_and_wait(addr, token, "sleep", {"seconds": 0.2}, 30.0)
    click.echo(json.dumps(result, indent=2))
    task = result.get("task", {})
    if not isinstance(task, dict) or task.get("status") != "TASK_STATUS_COMPLETED":
        raise CliError("demo task did not complete")
    click.echo(f"demo task {task['task_id']} finished in {time.monotonic() - started:.2f}s")
