"""A loopback JSON-RPC proxy in front of anvil that behaves like a rate-limited provider.

``RpcLimitProxy.start(anvil_url, rps=R)`` serves ``http://127.0.0.1:<port>/<key>/`` (the path
plays a provider's API key) on its own event loop in a thread, so its clock is not held up by
the platform under test. It forwards each request unless:

- more than ``rps`` requests arrived in the last second (sliding window): 429;
- ``mode == "error"``: 500 for everything;
- ``mode == "lag"``: ``eth_blockNumber`` answers ``lag`` blocks behind and blocks above that
  head are ``null`` (a node that fell behind).

It counts arrivals, the most in any one second, the most in flight, 429s, and the block
numbers it served to ``eth_getBlockByNumber``.

``ProxyProcess.start`` runs the same proxy in a child process (``python -m tests.rpc_proxy``),
so its clock, like a real provider's, is not held up by the process under test (a thread
there shares the GIL with the platform and would see requests bunched); it is driven over
``/_control/<key>`` with the same attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class ProxyCounts:
    arrivals: int = 0
    forwarded: int = 0
    throttled: int = 0
    errors: int = 0
    max_per_second: int = 0
    max_inflight: int = 0
    first_at: float = 0.0  # unix seconds of the first and the latest arrival
    last_at: float = 0.0
    methods: Counter[str] = field(default_factory=Counter)
    blocks_served: Counter[int] = field(default_factory=Counter)


class RpcLimitProxy:
    def __init__(self, upstream: str, rps: float | None, key: str) -> None:
        self.upstream = upstream
        self.rps = rps
        self.key = key
        self.mode = "ok"
        self.lag = 50
        self.counts = ProxyCounts()
        self._arrived: deque[float] = deque()
        self._inflight = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    @classmethod
    def start(cls, upstream: str, rps: float | None = None, key: str | None = None) -> RpcLimitProxy:
        proxy = cls(upstream, rps, key or f"sk-{secrets.token_hex(12)}")
        proxy._thread.start()
        proxy.port = asyncio.run_coroutine_threadsafe(proxy._start(), proxy._loop).result(10)
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.key}/"

    def reset(self) -> None:
        self.counts = ProxyCounts()

    async def _start(self) -> int:
        self._session = aiohttp.ClientSession()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{key}/", self._handle)
        app.router.add_post("/_control/{key}", self._control)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return int(self._runner.addresses[0][1])

    async def _control(self, request: web.Request) -> web.Response:
        if request.match_info["key"] != self.key:
            return web.Response(status=401)
        change = await request.json()
        for name in ("mode", "lag", "rps"):
            if name in change:
                setattr(self, name, change[name])
        if change.get("reset"):
            self.reset()
        c = self.counts
        doc = {k: v for k, v in c.__dict__.items() if k not in ("methods", "blocks_served")}
        doc["methods"] = dict(c.methods)
        doc["blocks_served"] = {str(k): v for k, v in c.blocks_served.items()}
        return web.json_response(doc)

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        c = self.counts
        c.arrivals += 1
        c.last_at = time.time()
        c.first_at = c.first_at or c.last_at
        self._arrived.append(now)
        while self._arrived and self._arrived[0] <= now - 1.0:
            self._arrived.popleft()
        c.max_per_second = max(c.max_per_second, len(self._arrived))
        if request.match_info["key"] != self.key:
            return web.Response(status=401)
        if self.rps is not None and len(self._arrived) > self.rps:
            c.throttled += 1
            return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "0"})
        if self.mode == "error":
            c.errors += 1
            return web.Response(status=500, text="upstream failure")
        body = await request.read()
        doc: Any = json.loads(body)
        for call in doc if isinstance(doc, list) else [doc]:
            c.methods[call.get("method", "?")] += 1
        self._inflight += 1
        c.max_inflight = max(c.max_inflight, self._inflight)
        try:
            if self.mode == "lag" and isinstance(doc, dict):
                answer = await self._lagging(doc)
                if answer is not None:
                    return web.json_response(answer)
            async with self._session.post(self.upstream, data=body, headers={"Content-Type": "application/json"}) as r:
                data = await r.read()
                status = r.status
        finally:
            self._inflight -= 1
        c.forwarded += 1
        self._count_blocks(doc, data)
        return web.Response(status=status, body=data, content_type="application/json")

    async def _lagging(self, call: dict[str, Any]) -> dict[str, Any] | None:
        head = await self._upstream_head()
        behind = max(0, head - self.lag)
        if call.get("method") == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": call.get("id"), "result": hex(behind)}
        if call.get("method") == "eth_getBlockByNumber":
            n = int(str(call["params"][0]), 16) if str(call["params"][0]).startswith("0x") else head
            if n > behind:
                return {"jsonrpc": "2.0", "id": call.get("id"), "result": None}
        return None

    async def _upstream_head(self) -> int:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        async with self._session.post(self.upstream, json=body) as r:
            return int((await r.json())["result"], 16)

    def _count_blocks(self, doc: Any, data: bytes) -> None:
        calls = doc if isinstance(doc, list) else [doc]
        if not any(c.get("method") == "eth_getBlockByNumber" for c in calls):
            return
        answer = json.loads(data)
        for reply in answer if isinstance(answer, list) else [answer]:
            result = reply.get("result") if isinstance(reply, dict) else None
            if isinstance(result, dict) and "number" in result:
                self.counts.blocks_served[int(result["number"], 16)] += 1

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class ProxyProcess:
    """The proxy in a child process; ``mode``, ``lag``, ``rps``, ``counts`` and ``reset``
    as on ``RpcLimitProxy`` (each a control call)."""

    def __init__(self, proc: subprocess.Popen[str], port: int, key: str) -> None:
        self._proc = proc
        self.port = port
        self.key = key

    @classmethod
    def start(cls, upstream: str, rps: float | None = None, key: str | None = None) -> ProxyProcess:
        key = key or f"sk-{secrets.token_hex(12)}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.rpc_proxy", upstream, "" if rps is None else str(rps), key],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            proc.kill()
            raise RuntimeError("the rpc proxy did not start")
        return cls(proc, int(line), key)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.key}/"

    def _call(self, change: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_control/{self.key}",
            json.dumps(change).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("mode", "lag", "rps"):
            self._call({name: value})
        else:
            super().__setattr__(name, value)

    @property
    def counts(self) -> ProxyCounts:
        doc = self._call({})
        methods = Counter(doc.pop("methods"))
        served = Counter({int(k): v for k, v in doc.pop("blocks_served").items()})
        return ProxyCounts(**doc, methods=methods, blocks_served=served)

    def reset(self) -> None:
        self._call({"reset": True})

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)


def _main() -> None:
    upstream, rps, key = sys.argv[1:4]
    proxy = RpcLimitProxy(upstream, float(rps) if rps else None, key)

    async def serve() -> None:
        print(await proxy._start(), flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    _main()
