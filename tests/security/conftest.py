"""Fixtures shared by the attack suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from trace_platform.app import start_platform
from trace_platform.core.config import Settings


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[grpc.aio.Channel]:
    """A whole platform on the test's settings, and a channel to it (modules with other
    needs define their own ``served``)."""
    running = await start_platform(settings, migrate=False)
    try:
        async with grpc.aio.insecure_channel(running.addr) as channel:
            yield channel
    finally:
        await running.stop(grace=0.5)
