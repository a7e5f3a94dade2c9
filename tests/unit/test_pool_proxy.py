"""The pool proxy against real loopback JSON-RPC servers (aiohttp): a JSON-RPC rate-limit
error is a throttle and the call moves to the other endpoint, endpoints that keep failing
go down and the caller gets an error at once (no key in it), eth_chainId is answered
from the pool's cache."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from trace_platform.adapters.rpc.jsonrpc import RpcError, json_rpc
from trace_platform.adapters.rpc.pool_proxy import pool_status, pool_url
from trace_platform.core.rpc_pools import RpcEndpoint, RpcPool

KEY = "sk-unit-5f3a9c"


@dataclass
class Upstream:
    answer: Callable[[dict[str, Any]], web.Response]
    calls: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{KEY}"


def ok(result: object) -> Callable[[dict[str, Any]], web.Response]:
    return lambda call: web.json_response({"jsonrpc": "2.0", "id": call.get("id"), "result": result})


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Callable[[dict[str, Any]], web.Response]], Any]]:
    runners: list[web.AppRunner] = []

    async def start(answer: Callable[[dict[str, Any]], web.Response]) -> Upstream:
        up = Upstream(answer)

        async def handle(request: web.Request) -> web.Response:
            call = json.loads(await request.read())
            up.calls.append(call["method"])
            return up.answer(call)

        app = web.Application()
        app.router.add_post(f"/{KEY}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        up.port = int(runner.addresses[0][1])
        return up

    yield start
    for r in runners:
        await r.cleanup()


async def call(url: str, method: str) -> Any:
    return await asyncio.to_thread(json_rpc, url, method, None, 10.0)


async def test_a_json_rpc_rate_limit_error_is_a_throttle_and_moves_the_call(serve: Any) -> None:
    def limited_answer(c: dict[str, Any]) -> web.Response:
        if c["method"] == "eth_blockNumber":  # its probes pass
            return ok("0x10")(c)
        return web.json_response({"jsonrpc": "2.0", "id": c["id"], "error": {"code": -32005, "message": "slow"}})

    limited = await serve(limited_answer)
    healthy = await serve(ok("0x10"))
    pool = RpcPool("unit_throttle", (RpcEndpoint(limited.url, 1000), RpcEndpoint(healthy.url, 1000)), probe_seconds=60)
    url = pool_url(pool)
    for _ in range(4):
        assert await call(url, "eth_gasPrice") == "0x10"
    first, second = pool_status({"p": pool})
    assert first.throttles >= 1 and first.state == "throttled" and first.errors == 0
    assert second.throttles == 0 and healthy.calls.count("eth_gasPrice") == 4
    assert first.requests == len(limited.calls) and second.requests == len(healthy.calls)


async def test_endpoints_that_keep_failing_go_down_and_the_caller_hears_at_once(serve: Any) -> None:
    broken = [await serve(lambda c: web.Response(status=502, text=f"bad gateway {KEY}")) for _ in range(2)]
    pool = RpcPool("unit_down", tuple(RpcEndpoint(b.url, 1000) for b in broken), probe_seconds=60)
    url = pool_url(pool)
    started = asyncio.get_running_loop().time()
    with pytest.raises(RpcError) as info:
        await call(url, "eth_blockNumber")
    assert KEY not in str(info.value)
    assert asyncio.get_running_loop().time() - started < 8  # back-offs, not the 20 s deadline
    assert [s.state for s in pool_status({"p": pool})] == ["down", "down"]
    assert all(s.errors >= 3 for s in pool_status({"p": pool}))
    started = asyncio.get_running_loop().time()
    with pytest.raises(RpcError):
        await call(url, "eth_blockNumber")  # all down: refused without waiting
    assert asyncio.get_running_loop().time() - started < 1


async def test_chain_id_is_answered_from_the_pools_cache(serve: Any) -> None:
    node = await serve(ok("0x7a69"))
    pool = RpcPool("unit_chain", (RpcEndpoint(node.url, 1000),), probe_seconds=60)
    url = pool_url(pool)
    assert [await call(url, "eth_chainId") for _ in range(3)] == ["0x7a69"] * 3
    assert node.calls.count("eth_chainId") == 1
