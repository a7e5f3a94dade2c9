"""The effective settings as `trace config show` prints them: every variable, its value
(secrets masked) and where the value came from.

Masking is by kind, not by a list of today's secrets: a field whose name says token,
secret, password or access key shows only that it is set; the RPC pools show pool names and
endpoint hosts (a provider's key sits in the URL's path or query), as does any URL field
named for a webhook or RPC; any other URL shows no password and no query values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from trace_platform.core.rpc_pools import RpcPool, pool_of
from trace_platform.core.settings_env import Loaded, Variable, value_of, variables

MASK = "***"
# URLs shown by host only: a webhook's or an RPC provider's key sits in the path.
_HOST_ONLY = re.compile(r"webhook|rpc|hook_url")

# Field path -> the value the services use when it is unset (adapters/objectstore/factory.py,
# servers/*/app.py: all relative to the data directory, in every profile).
DATA_DIR_DEFAULTS: Mapping[str, Callable[[Path], Any]] = {
    "tokens.key_dir": lambda d: d / "keys",
    "query.file_roots": lambda d: (d / "objects",),
    "datasets_uri": lambda d: f"file://{d / 'objects'}",
    "scratch_uri": lambda d: f"file://{d / 'scratch'}",
    "invoker.bundle_roots": lambda d: (d / "bundles",),
    "invoker.trusted_keys_dir": lambda d: d / "bundle_keys",
    "bundles.uri": lambda d: f"file://{d / 'bundles'}",
}

# What `trace lite up` puts in when unset (lite/stack.py): field path -> (value, source).
LITE_DEFAULTS: Mapping[str, Callable[[Path], tuple[Any, str]]] = {
    "database_url": lambda d: (f"embedded PostgreSQL in {d / 'pg'}", "lite"),
    "admin_token": lambda d: (MASK, "lite credentials"),
    "worker_token": lambda d: (MASK, "lite credentials"),
    "user_auth.hs256_secret": lambda d: (MASK, "lite credentials"),
    "delivery.allow_http": lambda d: (True, "lite"),
    "delivery.allowed_networks": lambda d: (("127.0.0.0/8", "::1/128"), "lite"),
}


@dataclass(frozen=True)
class Row:
    path: str
    variable: str
    value: Any  # JSON-ready, masked
    source: str  # env | default | data dir | lite | lite credentials


def rows(loaded: Loaded, *, lite: bool = False) -> list[Row]:
    settings = loaded.settings
    out: list[Row] = []
    for var in variables():
        source = loaded.sources.get(var.path)
        value = value_of(settings, var.path)
        if source is not None:
            shown_as = var.name if var.kind == "pools" or source.startswith("--") else source
            origin = source if source.startswith("--") else "env"
        else:
            shown_as, origin = var.name, "default"
            if lite and var.path in LITE_DEFAULTS:
                value, origin = LITE_DEFAULTS[var.path](settings.data_dir)
            elif var.path in DATA_DIR_DEFAULTS and not value:
                value, origin = DATA_DIR_DEFAULTS[var.path](settings.data_dir), "data dir"
        out.append(Row(var.path, shown_as, shown(var, value), origin))
    return out


def shown(var: Variable, value: Any) -> Any:
    """``value`` of ``var`` as it may be printed."""
    if value is None:
        return None
    if var.kind == "pools":
        return {name: _pool_hosts(pool_of(name, v)) for name, v in value.items()}
    if var.secret:
        return MASK if value else ""
    if isinstance(value, tuple):
        return [str(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str) and "://" in value:
        return mask_url(value, host_only=bool(_HOST_ONLY.search(var.path)))
    return value


def _pool_hosts(pool: RpcPool) -> list[str]:
    return [pool.label(i) for i in range(len(pool.endpoints))]


def mask_url(url: str, *, host_only: bool = False) -> str:
    """``url`` without its password and query values (either may be a key); with
    ``host_only`` without its path too (a webhook's or an RPC provider's key is there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not parseable: show nothing of it
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{host}{port}"
    elif parts.username is not None:
        netloc = f"{MASK}@{host}{port}"  # a bare user part may itself be a token
    if host_only:
        return urlunsplit((parts.scheme, netloc, MASK if parts.path.strip("/") else parts.path, "", ""))
    query = urlencode([(k, MASK) for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    if parts.query and not query:
        query = MASK
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


def as_json(loaded: Loaded, *, lite: bool = False) -> dict[str, Any]:
    aliases = {v.path: list(v.aliases) for v in variables()}
    table = {
        r.path: {"variable": r.variable, "aliases": aliases[r.path], "value": r.value, "source": r.source}
        for r in rows(loaded, lite=lite)
    }
    return {"data_dir": str(loaded.settings.data_dir), "settings": table}


def as_text(loaded: Loaded, *, lite: bool = False) -> str:
    table = rows(loaded, lite=lite)
    width = max(len(r.variable) for r in table)
    src = max(len(r.source) for r in table)
    lines = [f"{'VARIABLE':<{width}}  {'SOURCE':<{src}}  VALUE"]
    lines += [f"{r.variable:<{width}}  {r.source:<{src}}  {_text(r.value)}" for r in table]
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value) if value else "(empty)"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {', '.join(v)}" for k, v in value.items()) if value else "(none)"
    return str(value) if value != "" else "(empty)"
