"""The RPC pool proxy: one loopback JSON-RPC endpoint per pool that spreads requests over
the pool's endpoints within their limits.

Cryo (a child process), the head observer and verify all talk to
``http://127.0.0.1:<port>/<token>/<pool id>``; the real URLs (they may hold keys) never
leave this process. Each request goes to the usable endpoint with the most headroom:

- limits: at most ``max_concurrent_requests`` in flight, and a new request is sent only
  while fewer than ``requests_per_second`` requests are in flight or *finished* within the
  last ``WINDOW`` seconds. A request counts from its send until ``WINDOW`` after its answer
  (or failure): the node saw it before we got the answer, so however late a send leaves
  this process (a busy loop, the GIL), the node never sees more than the limit in a second;
- 429 (or a JSON-RPC rate-limit error) puts the endpoint in a cool-down with exponential
  backoff and jitter (``Retry-After`` when given); 5xx, 401/403 and transport errors do
  the same and, repeated, mark it down; the request is retried on another endpoint;
- a ``null`` block while another endpoint is usable is a lagging node: retried elsewhere;
- a probe per endpoint (``eth_blockNumber`` every ``probe_seconds``, within the limits)
  brings a down endpoint back and marks one lagging whose head trails the best by more
  than ``max_head_lag`` blocks (no traffic until it catches up).

The proxy runs on its own event loop in a daemon thread, shared by everything in the
process (the worker's Cryo runs and the Dispatcher's head observer in Lite), so the limits
hold for the whole process; counters live here too (``pool_status``). Limits are per
process: several worker processes on one pool each get the whole limit (docs/rpc_pools.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from trace_platform.core.rpc_pools import RpcEndpoint, RpcPool, pool_of

log = logging.getLogger(__name__)

WINDOW = 1.02  # seconds; a little over one against clock granularity (module doc)
MAX_ATTEMPTS = 8
ACQUIRE_TIMEOUT = 20.0
REQUEST_TIMEOUT = 30.0
# Its own generator: the proxy's thread outlives callers (one per process), and drawing from
# the global one would reseed, and be seen by, whatever else in the process uses it.
_JITTER = random.Random()
BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0
DOWN_AFTER = 3  # consecutive failures
IDLE_SECONDS = 120.0  # a pool nobody used for this long is not probed
CHAIN_ID_SECONDS = 60.0  # how long a pool's eth_chainId answer is reused
DEFAULT_CRYO_CONCURRENCY = 16  # per endpoint without its own limit
_RATE_LIMIT_CODES = {-32005, 429, -32029}
_NULL_CHECKED = (b"eth_getBlockByNumber", b"eth_getBlockReceipts", b"eth_getBlockByHash")


@dataclass(frozen=True)
class EndpointStatus:
    rpc_pool: str
    index: int
    host: str
    state: str  # healthy, throttled, down, lagging
    requests: int
    errors: int
    throttles: int
    head_block: int | None
    head_observed_at: float | None  # unix seconds
    requests_per_second: float | None
    max_concurrent_requests: int | None


class _Endpoint:
    def __init__(self, index: int, endpoint: RpcEndpoint) -> None:
        self.index = index
        self.url = endpoint.url
        self.host = endpoint.host
        self.rps = endpoint.requests_per_second
        self.concurrency = endpoint.max_concurrent_requests
        self.finished: deque[float] = deque()  # answer times within the last WINDOW
        self.inflight = 0
        self.requests = 0
        self.errors = 0
        self.throttles = 0
        self.head: int | None = None
        self.head_at: float | None = None
        self.cool_until = 0.0
        self.failures = 0  # consecutive
        self.throttled_in_row = 0
        self.down = False
        self.lagging = False

    def usable(self, now: float) -> bool:
        return not self.down and not self.lagging and self.cool_until <= now

    def next_slot(self, now: float) -> float:
        """When a send is allowed by the limits (``now`` if it is)."""
        while self.finished and self.finished[0] <= now - WINDOW:
            self.finished.popleft()
        if self.concurrency is not None and self.inflight >= self.concurrency:
            return now + 1.0  # a release wakes the waiters sooner
        if self.rps is not None and self.inflight + len(self.finished) >= self._cap():
            over = self.inflight + len(self.finished) - self._cap()
            # in flight: a release wakes the waiters; else the over-th oldest answer expires
            return self.finished[over] + WINDOW if over < len(self.finished) else now + 1.0
        return now

    def _cap(self) -> int:
        return max(1, int(self.rps or 1))  # sends per window

    def headroom(self, now: float) -> float:
        c = 1.0 - self.inflight / self.concurrency if self.concurrency else 1.0
        r = 1.0 - (self.inflight + len(self.finished)) / self._cap() if self.rps else 1.0
        return min(c, r)

    def state(self, now: float) -> str:
        if self.down:
            return "down"
        if self.lagging:
            return "lagging"
        return "throttled" if self.cool_until > now else "healthy"

    def backoff(self, attempts: int, retry_after: float | None = None) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempts - 1, 10))
        delay = delay / 2 + _JITTER.uniform(0, delay / 2)  # jitter: endpoints' clients do not retry in step
        if retry_after is not None:
            delay = max(delay, min(retry_after, 60.0))
        self.cool_until = max(self.cool_until, time.monotonic() + delay)

    def failed(self) -> None:
        self.errors += 1
        self.failures += 1
        self.backoff(self.failures)
        if self.failures >= DOWN_AFTER:
            self.down = True  # until a probe succeeds

    def throttled(self, retry_after: float | None) -> None:
        self.throttles += 1
        self.throttled_in_row += 1
        self.backoff(self.throttled_in_row, retry_after)

    def succeeded(self) -> None:
        self.failures = 0
        self.throttled_in_row = 0


class _Pool:
    def __init__(self, pool: RpcPool) -> None:
        self.pool = pool
        self.endpoints = [_Endpoint(i, e) for i, e in enumerate(pool.endpoints)]
        self.changed = asyncio.Event()
        self.used_at = time.monotonic()
        self.chain_id: tuple[str, float] | None = None

    def _remember_chain_id(self, data: bytes) -> None:
        try:
            result = json.loads(data)["result"]
        except (ValueError, KeyError, TypeError):
            return
        if isinstance(result, str):
            self.chain_id = (result, time.monotonic())

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def acquire(self, tried: set[int], only: _Endpoint | None = None) -> _Endpoint | None:
        deadline = time.monotonic() + ACQUIRE_TIMEOUT
        while True:
            now = time.monotonic()
            if only is not None:
                candidates = [only]
            else:
                usable = [e for e in self.endpoints if e.usable(now)]
                candidates = [e for e in usable if e.index not in tried] or usable
                if not usable and all(e.down or e.lagging for e in self.endpoints):
                    return None  # none comes back before a probe: fail now, not at the deadline
            ready = [e for e in candidates if e.next_slot(now) <= now]
            if ready:
                chosen = max(ready, key=lambda e: e.headroom(now))
                chosen.inflight += 1
                chosen.requests += 1
                return chosen
            wake_at = min(
                [e.next_slot(now) for e in candidates] + [e.cool_until for e in self.endpoints if e.cool_until > now],
                default=now + 0.05,
            )
            if wake_at >= deadline or now >= deadline:
                return None
            event = self.changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=max(0.001, min(wake_at, deadline) - now))

    def release(self, e: _Endpoint) -> None:
        e.inflight -= 1
        e.finished.append(time.monotonic())  # answers come in order of time: the deque stays sorted
        self._wake()

    async def forward(self, session: aiohttp.ClientSession, body: bytes) -> tuple[int, bytes]:
        self.used_at = time.monotonic()
        call_id, is_chain_id = _chain_id_call(body)
        if is_chain_id and self.chain_id is not None and self.used_at - self.chain_id[1] < CHAIN_ID_SECONDS:
            # A node's chain id does not change: every head observation and Cryo run asks
            # for it, and a provider counts each one against the limit.
            return 200, json.dumps({"jsonrpc": "2.0", "id": call_id, "result": self.chain_id[0]}).encode()
        tried: set[int] = set()
        for _ in range(MAX_ATTEMPTS):
            e = await self.acquire(tried)
            if e is None:
                break
            tried.add(e.index)
            try:
                async with session.post(e.url, data=body, headers=_JSON, timeout=_TIMEOUT) as resp:
                    status, data = resp.status, await resp.read()
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError):
                e.failed()
                continue
            finally:
                self.release(e)
            if status == 429 or (status == 200 and _rate_limited(data)):
                e.throttled(retry_after)
                continue
            if status >= 500 or status in (401, 403):
                e.failed()
                continue
            if status == 200 and self._lagging_answer(e, body, data, tried):
                continue
            e.succeeded()
            if is_chain_id and status == 200:
                self._remember_chain_id(data)
            return status, data
        return 503, _error_body("no endpoint of the rpc pool answered within its limits")

    def _lagging_answer(self, e: _Endpoint, body: bytes, data: bytes, tried: set[int]) -> bool:
        if len(data) > 200 or b'"result":null' not in data.replace(b" ", b""):
            return False
        if not any(m in body[:200] for m in _NULL_CHECKED):
            return False
        now = time.monotonic()
        if not any(o.usable(now) and o.index not in tried for o in self.endpoints):
            return False  # nobody else to ask: the answer stands
        e.lagging = True  # until a probe finds it caught up
        self._wake()
        return True

    async def probe_forever(self, session: aiohttp.ClientSession) -> None:
        while True:
            if time.monotonic() - self.used_at < IDLE_SECONDS:
                await asyncio.gather(*(self._probe(session, e) for e in self.endpoints))
                self._judge_lag()
            await asyncio.sleep(self.pool.probe_seconds)

    async def _probe(self, session: aiohttp.ClientSession, e: _Endpoint) -> None:
        got = await self.acquire(set(), only=e)
        if got is None:
            return
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
        try:
            async with session.post(e.url, data=body, headers=_JSON, timeout=_PROBE) as r:
                status, data = r.status, await r.read()
                retry_after = _retry_after(r.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError):
            e.failed()
            return
        finally:
            self.release(e)
        if status == 429 or (status == 200 and _rate_limited(data)):
            e.throttled(retry_after)
            return
        try:
            head = int(str(json.loads(data)["result"]), 16)
        except (ValueError, KeyError, TypeError):
            e.failed()
            return
        e.head, e.head_at = head, time.time()
        if e.failures and not e.throttled_in_row:
            e.cool_until = 0.0  # it answers again: its error back-off is over (a 429's is not)
        e.down, e.failures = False, 0
        self._wake()

    def _judge_lag(self) -> None:
        heads = [e.head for e in self.endpoints if e.head is not None and not e.down]
        if not heads:
            return
        best = max(heads)
        for e in self.endpoints:
            if e.head is not None and not e.down:
                was = e.lagging
                e.lagging = e.head < best - self.pool.max_head_lag
                if was != e.lagging:
                    log.info(
                        "rpc endpoint lagging" if e.lagging else "rpc endpoint caught up",
                        extra={"rpc_pool": self.pool.name, "endpoint": self.pool.label(e.index)},
                    )
        self._wake()

    def status(self) -> list[EndpointStatus]:
        now = time.monotonic()
        return [
            EndpointStatus(
                self.pool.name,
                e.index,
                e.host,
                e.state(now),
                e.requests,
                e.errors,
                e.throttles,
                e.head,
                e.head_at,
                e.rps,
                e.concurrency,
            )
            for e in self.endpoints
        ]


_TIMEOUT = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
_PROBE = aiohttp.ClientTimeout(total=5.0)
_JSON = {"Content-Type": "application/json"}


def _chain_id_call(body: bytes) -> tuple[object, bool]:
    """(id, True) for a single ``eth_chainId`` call."""
    if len(body) > 256 or b"eth_chainId" not in body:
        return None, False
    try:
        doc = json.loads(body)
    except ValueError:
        return None, False
    if isinstance(doc, dict) and doc.get("method") == "eth_chainId":
        return doc.get("id"), True
    return None, False


def _retry_after(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def _rate_limited(data: bytes) -> bool:
    if len(data) > 2048 or b'"error"' not in data:
        return False
    try:
        doc = json.loads(data)
    except ValueError:
        return False
    entries = doc if isinstance(doc, list) else [doc]
    return any(
        isinstance(d, dict) and isinstance(d.get("error"), dict) and d["error"].get("code") in _RATE_LIMIT_CODES
        for d in entries
    )


def _error_body(message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32603, "message": message}}).encode()


class _Proxy:
    """The process's proxy: a loop in a daemon thread, an aiohttp server on loopback."""

    def __init__(self) -> None:
        self._token = secrets.token_urlsafe(24)  # other local users cannot spend the pool's keys
        self._pools: list[_Pool] = []
        self._ids: dict[RpcPool, int] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="rpc-pool-proxy", daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> int:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application(client_max_size=16 << 20)
        app.router.add_post("/{token}/{pool}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    async def _handle(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["token"], self._token):
            return web.Response(status=404)
        try:
            pool = self._pools[int(request.match_info["pool"])]
        except (ValueError, IndexError):
            return web.Response(status=404)
        status, data = await pool.forward(self._session, await request.read())
        return web.Response(status=status, body=data, content_type="application/json")

    def url(self, pool: RpcPool) -> str:
        with self._lock:
            pid = self._ids.get(pool)
            if pid is None:
                pid = len(self._pools)
                self._ids[pool] = pid
                self._loop.call_soon_threadsafe(self._add, pool)
                # _add runs before any request can name pid: requests reach the same loop later.
        return f"http://127.0.0.1:{self.port}/{self._token}/{pid}"

    def _add(self, pool: RpcPool) -> None:
        p = _Pool(pool)
        self._pools.append(p)
        self._loop.create_task(p.probe_forever(self._session))

    def latest(self, name: str) -> RpcPool | None:
        with self._lock:
            return next((p for p in reversed(list(self._ids)) if p.name == name), None)

    def status(self, pool: RpcPool) -> list[EndpointStatus]:
        with self._lock:
            pid = self._ids.get(pool)
        if pid is None or pid >= len(self._pools):
            return []
        return self._pools[pid].status()


_PROXY: _Proxy | None = None
_PROXY_LOCK = threading.Lock()


def _proxy() -> _Proxy:
    global _PROXY
    with _PROXY_LOCK:
        if _PROXY is None:
            _PROXY = _Proxy()
        return _PROXY


def pool_url(pool: RpcPool) -> str:
    """Where callers send the pool's JSON-RPC: the proxy, or a single unlimited URL itself."""
    return _proxy().url(pool) if pool.proxied else pool.endpoints[0].url


def cryo_concurrency(pool: RpcPool) -> int | None:
    """Cryo's --max-concurrent-requests for a proxied pool: enough to fill every endpoint."""
    if not pool.proxied:
        return None
    return sum(e.max_concurrent_requests or DEFAULT_CRYO_CONCURRENCY for e in pool.endpoints)


class PoolUrls(Mapping[str, str]):
    """Settings' pools as the URLs callers use (``pool_url``), resolved on first use."""

    def __init__(self, pools: Mapping[str, str | RpcPool]) -> None:
        self.pools = {name: pool_of(name, v) for name, v in pools.items()}

    def __getitem__(self, name: str) -> str:
        return pool_url(self.pools[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.pools)

    def __len__(self) -> int:
        return len(self.pools)


def pool_status(pools: Mapping[str, str | RpcPool], names: set[str] | None = None) -> list[EndpointStatus]:
    """Per endpoint of each proxied pool (``names``: only those) this process has used."""
    if _PROXY is None:
        return []
    out: list[EndpointStatus] = []
    for name, value in sorted(pools.items()):
        pool = pool_of(name, value)
        if pool.proxied and (names is None or name in names):
            out.extend(_PROXY.status(pool))
    return out


def status_by_name(names: set[str]) -> list[EndpointStatus]:
    """Per endpoint of the pools named, as this process's proxy last configured them (what
    the ChainSync status RPC reports; only proxied pools this process has used)."""
    if _PROXY is None:
        return []
    out: list[EndpointStatus] = []
    for name in sorted(names):
        pool = _PROXY.latest(name)
        if pool is not None:
            out.extend(_PROXY.status(pool))
    return out
