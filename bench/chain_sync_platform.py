"""`trace dispatcher serve --worker`, with timers around the parts the benchmark reports.

The chain_sync benchmark runs the platform in its own process through this module:
it wraps, without changing what they do, the cryo_ingest operator, ``CryoRunner.run``,
``RangePlanner.step`` and ``ChainSyncRepository.plan_stream``, and appends one JSON
line per call to the file named by TRACE_BENCH_TIMINGS. Then it runs the ordinary
CLI: ``python bench/chain_sync_platform.py dispatcher serve --worker --listen ...``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import trace_platform.roles.operators as platform_ops
from trace_platform.adapters.extract.cryo_runner import CryoRequest, CryoRunner, StagedOutput
from trace_platform.adapters.postgres.chain_sync_repository import ChainSyncRepository
from trace_platform.cli.main import main
from trace_platform.servers.chain_sync.planner import RangePlanner
from trace_platform.workers.cryo_ingest import cryo_ingest_operator
from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult

_out = open(os.environ["TRACE_BENCH_TIMINGS"], "a", buffering=1)  # noqa: SIM115 - lives as long as the process


def _emit(**record: Any) -> None:
    _out.write(json.dumps(record) + "\n")


_run = CryoRunner.run


async def _timed_run(self: CryoRunner, req: CryoRequest) -> StagedOutput:
    t0 = time.perf_counter()
    staged = await _run(self, req)
    # cryo_seconds: the child process (start-up + cryo.async_freeze); the rest: output checks.
    _emit(kind="cryo", task=req.task_id, cryo=staged.cryo_seconds, run=time.perf_counter() - t0)
    return staged


_make_operator = cryo_ingest_operator


@functools.wraps(_make_operator)
def _timed_operator_factory(*args: Any, **kwargs: Any) -> Operator:
    operator = _make_operator(*args, **kwargs)

    async def timed(ctx: OperatorContext) -> OperatorResult:
        t0 = time.perf_counter()
        result = await operator(ctx)
        _emit(kind="operator", task=ctx.ref.task_id, seconds=time.perf_counter() - t0)
        return result

    return timed


_step = RangePlanner.step


async def _timed_step(self: RangePlanner) -> int:
    t0 = time.perf_counter()
    out = await _step(self)
    _emit(kind="planner_step", seconds=time.perf_counter() - t0)
    return out


_plan_stream = ChainSyncRepository.plan_stream


async def _timed_plan_stream(self: ChainSyncRepository, *args: Any, **kwargs: Any) -> int:
    t0 = time.perf_counter()
    scheduled = await _plan_stream(self, *args, **kwargs)
    _emit(kind="plan_stream", seconds=time.perf_counter() - t0, scheduled=scheduled)
    return scheduled


CryoRunner.run = _timed_run  # type: ignore[method-assign]
# platform_operators looks the factory up in trace_platform.roles.operators at call time
platform_ops.cryo_ingest_operator = _timed_operator_factory
RangePlanner.step = _timed_step  # type: ignore[method-assign]
ChainSyncRepository.plan_stream = _timed_plan_stream  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
