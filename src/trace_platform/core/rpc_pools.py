"""RPC pools: named sets of JSON-RPC endpoints, each with its own limits (see docs/rpc_pools.md).

A pool comes from the environment or from a pool file:

- ``TRACE_RPC_POOL_<POOL>_URL``: one endpoint, no limits (as before; used directly).
- ``TRACE_RPC_POOL_<POOL>_URLS``: comma-separated endpoints, with optional
  ``TRACE_RPC_POOL_<POOL>_RPS`` and ``TRACE_RPC_POOL_<POOL>_CONCURRENCY`` (one value for
  every endpoint or one per endpoint, comma-separated, in the same order) and
  ``TRACE_RPC_POOL_<POOL>_MAX_LAG`` (blocks an endpoint may trail the others' head).
- ``TRACE_RPC_POOL_FILE``: a JSON or YAML file ``{pools: {<pool>: {endpoints: [...]}}}``.

URLs may hold keys: they are kept out of ``repr``, and every error names the variable and
the endpoint's position, never the URL. Outside this module an endpoint is shown by
``label`` (index and host) only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PREFIX = "TRACE_RPC_POOL_"
POOL_FILE = "TRACE_RPC_POOL_FILE"
DEFAULT_MAX_HEAD_LAG = 10
DEFAULT_PROBE_SECONDS = 2.0
_SUFFIXES = ("_URLS", "_URL", "_RPS", "_CONCURRENCY", "_MAX_LAG")


class RpcPoolConfigError(ValueError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class RpcEndpoint:
    url: str = field(repr=False)
    requests_per_second: float | None = None
    max_concurrent_requests: int | None = None

    @property
    def host(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class RpcPool:
    name: str
    endpoints: tuple[RpcEndpoint, ...]
    max_head_lag: int = DEFAULT_MAX_HEAD_LAG
    probe_seconds: float = DEFAULT_PROBE_SECONDS

    @property
    def proxied(self) -> bool:
        """Spread over a local proxy: several endpoints or any limit. A single unlimited URL
        is handed to its callers as it is (no extra hop)."""
        return len(self.endpoints) > 1 or any(
            e.requests_per_second is not None or e.max_concurrent_requests is not None for e in self.endpoints
        )

    def label(self, index: int) -> str:
        return f"#{index} {self.endpoints[index].host}"


def pool_of(name: str, value: str | RpcPool) -> RpcPool:
    """A settings value (a bare URL or a pool) as a pool."""
    return value if isinstance(value, RpcPool) else RpcPool(name, (RpcEndpoint(value),))


def rpc_pools_from_env(env: Mapping[str, str]) -> dict[str, str | RpcPool]:
    """Every pool of the environment and the pool file; ``SettingsError`` names what is wrong."""
    from trace_platform.core.config import SettingsError  # config imports this module

    try:
        return parse_rpc_pools(env)
    except RpcPoolConfigError as e:
        raise SettingsError(e.variable, e.problem) from None


def parse_rpc_pools(env: Mapping[str, str]) -> dict[str, str | RpcPool]:
    grouped: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(PREFIX) or name == POOL_FILE or not value:
            continue
        rest = name[len(PREFIX) :]
        suffix = next((s for s in _SUFFIXES if rest.endswith(s) and len(rest) > len(s)), None)
        if suffix is not None:
            grouped.setdefault(rest[: -len(suffix)].lower(), {})[suffix] = value
    pools: dict[str, str | RpcPool] = {}
    for pool, values in grouped.items():
        var = f"{PREFIX}{pool.upper()}"
        if "_URL" in values and "_URLS" in values:
            raise RpcPoolConfigError(f"{var}_URLS", f"set either it or {var}_URL, not both")
        if "_URL" in values and len(values) == 1:
            _check_url(values["_URL"], f"{var}_URL", 0)
            pools[pool] = values["_URL"]  # the single-URL form, exactly as before
            continue
        urls = values.get("_URLS") or values.get("_URL")
        if not urls:
            raise RpcPoolConfigError(f"{var}_URLS", "limits are set but no endpoint is")
        pools[pool] = _env_pool(pool, var, urls, values)
    if env.get(POOL_FILE):
        for pool, parsed in _file_pools(Path(env[POOL_FILE]), env).items():
            if pool in pools:
                raise RpcPoolConfigError(POOL_FILE, f"pool {pool!r} is also set in the environment")
            pools[pool] = parsed
    return pools


def _env_pool(pool: str, var: str, urls: str, values: Mapping[str, str]) -> RpcPool:
    listed = [u.strip() for u in urls.split(",")]
    for i, url in enumerate(listed):
        _check_url(url, f"{var}_URLS", i)
    rps = _per_endpoint(values.get("_RPS"), len(listed), f"{var}_RPS", float)
    conc = _per_endpoint(values.get("_CONCURRENCY"), len(listed), f"{var}_CONCURRENCY", int)
    lag = _positive(values.get("_MAX_LAG", str(DEFAULT_MAX_HEAD_LAG)), f"{var}_MAX_LAG", int)
    endpoints = tuple(RpcEndpoint(u, r, c) for u, r, c in zip(listed, rps, conc, strict=True))
    return RpcPool(pool, endpoints, max_head_lag=int(lag))


def _per_endpoint(raw: str | None, n: int, var: str, kind: type[float] | type[int]) -> list[Any]:
    if raw is None:
        return [None] * n
    items = [s.strip() for s in raw.split(",")]
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise RpcPoolConfigError(var, f"give one value or one per endpoint ({n})")
    return [_positive(s, var, kind) for s in items]


def _positive(raw: str, var: str, kind: type[float] | type[int]) -> float | int:
    try:
        value = kind(raw)
    except ValueError:
        raise RpcPoolConfigError(var, f"not a number: {raw!r}") from None
    if not value > 0:
        raise RpcPoolConfigError(var, f"must be positive: {raw!r}")
    return value


def _check_url(url: str, var: str, index: int) -> None:
    # Never quote the URL: it may hold a key.
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RpcPoolConfigError(var, f"endpoint {index} is not an http(s) URL")


def _file_pools(path: Path, env: Mapping[str, str]) -> dict[str, RpcPool]:
    try:
        text = path.read_text()
    except OSError:
        raise RpcPoolConfigError(POOL_FILE, "cannot read the pool file") from None
    try:
        if path.suffix == ".json":
            doc = json.loads(text)
        else:
            import yaml

            doc = yaml.safe_load(text)
    except Exception:
        raise RpcPoolConfigError(POOL_FILE, "not valid JSON or YAML") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), dict) or set(doc) - {"pools"}:
        raise RpcPoolConfigError(POOL_FILE, "expected {pools: {<name>: {endpoints: [...]}}}")
    out: dict[str, RpcPool] = {}
    for name, spec in doc["pools"].items():
        where = f"pools.{name}"
        if not isinstance(name, str) or not name.replace("_", "").isalnum() or name.lower() != name:
            raise RpcPoolConfigError(POOL_FILE, f"{where}: pool names are lower-case slugs")
        if not isinstance(spec, dict) or set(spec) - {"endpoints", "max_head_lag", "probe_seconds"}:
            raise RpcPoolConfigError(POOL_FILE, f"{where}: keys are endpoints, max_head_lag, probe_seconds")
        raw = spec.get("endpoints")
        if not isinstance(raw, list) or not raw:
            raise RpcPoolConfigError(POOL_FILE, f"{where}.endpoints: a non-empty list")
        endpoints = tuple(_file_endpoint(e, f"{where}.endpoints[{i}]", i, env) for i, e in enumerate(raw))
        lag = _positive(str(spec.get("max_head_lag", DEFAULT_MAX_HEAD_LAG)), f"{POOL_FILE} {where}.max_head_lag", int)
        probe = _positive(
            str(spec.get("probe_seconds", DEFAULT_PROBE_SECONDS)), f"{POOL_FILE} {where}.probe_seconds", float
        )
        out[name] = RpcPool(name, endpoints, int(lag), float(probe))
    return out


def _file_endpoint(e: object, where: str, index: int, env: Mapping[str, str]) -> RpcEndpoint:
    if isinstance(e, str):
        e = {"url": e}
    allowed = {"url", "url_env", "requests_per_second", "max_concurrent_requests"}
    if not isinstance(e, dict) or set(e) - allowed or ("url" in e) == ("url_env" in e):
        raise RpcPoolConfigError(POOL_FILE, f"{where}: url or url_env, requests_per_second, max_concurrent_requests")
    # url_env: the key stays in the environment (a secret store); the file only names it.
    url = env.get(str(e["url_env"]), "") if "url_env" in e else str(e["url"])
    _check_url(url, f"{POOL_FILE} {where}", index)
    rps = e.get("requests_per_second")
    conc = e.get("max_concurrent_requests")
    return RpcEndpoint(
        url,
        None if rps is None else float(_positive(str(rps), f"{POOL_FILE} {where}.requests_per_second", float)),
        None if conc is None else int(_positive(str(conc), f"{POOL_FILE} {where}.max_concurrent_requests", int)),
    )
