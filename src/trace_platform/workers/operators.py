"""Built-in platform operators for the trusted worker (more arrive with later issues)."""

from __future__ import annotations

import asyncio

from trace_platform.workers.runtime import Operator, OperatorContext, OperatorResult


async def noop(ctx: OperatorContext) -> OperatorResult:
    return OperatorResult()


async def sleep(ctx: OperatorContext) -> OperatorResult:
    """Sleeps ``config.seconds`` (bounded); used by the demo and failure tests."""
    await asyncio.sleep(min(float(ctx.config.get("seconds", 1.0)), 3600.0))
    return OperatorResult()


async def fail(ctx: OperatorContext) -> OperatorResult:
    raise RuntimeError(str(ctx.config.get("message", "asked to fail"))[:200])


BUILTIN_OPERATORS: dict[str, Operator] = {"noop": noop, "sleep": sleep, "fail": fail}
