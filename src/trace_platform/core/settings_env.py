"""Settings from the environment, derived from the dataclasses of core/config.py.

Every leaf field of ``Settings`` is one variable: ``TRACE_`` and its path upper-cased
(``query.slots`` -> ``TRACE_QUERY_SLOTS``, ``invoker.limits.timeout_seconds`` ->
``TRACE_INVOKER_LIMITS_TIMEOUT_SECONDS``). The names used before the derivation stay
accepted as aliases (``ALIASES``); the RPC pools keep their own family
(``TRACE_RPC_POOL_<POOL>_URL`` ..., core/rpc_pools.py). Its type comes from the field's
annotation, so a field added to a dataclass is settable with no code here; a type with no
parser fails ``variables()`` (and its test) rather than being silently unsettable.

Written by hand over ``dataclasses.fields`` rather than with pydantic-settings: the
settings stay the frozen dataclasses the code uses (no second model to keep in step), the
old flat names map field by field, error messages name the variable the operator set and
never quote a secret, and ``trace --help`` does not import pydantic.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from trace_platform.core import rpc_pools
from trace_platform.core.config import QUEUE_BACKENDS, Settings, SettingsError

# Field path -> names accepted before the derivation (kept working; docs list them).
ALIASES: Mapping[str, tuple[str, ...]] = {
    "tokens.issuer": ("TRACE_TOKEN_ISSUER",),
    "tokens.key_dir": ("TRACE_TOKEN_KEY_DIR",),
    "tokens.ttl_seconds": ("TRACE_TOKEN_TTL_SECONDS",),
    "tokens.dev_hs256_secret": ("TRACE_DEV_HS256_SECRET",),
    "dispatcher.lease_seconds": ("TRACE_LEASE_SECONDS",),
    "dispatcher.default_max_attempts": ("TRACE_MAX_ATTEMPTS",),
    "dispatcher.retry_base_seconds": ("TRACE_RETRY_BASE_SECONDS",),
    "dispatcher.retry_max_seconds": ("TRACE_RETRY_MAX_SECONDS",),
    "dispatcher.outbox_interval_seconds": ("TRACE_OUTBOX_INTERVAL_SECONDS",),
    "dispatcher.outbox_batch": ("TRACE_OUTBOX_BATCH",),
    "dispatcher.reaper_interval_seconds": ("TRACE_REAPER_INTERVAL_SECONDS",),
    "dispatcher.retry_interval_seconds": ("TRACE_RETRY_INTERVAL_SECONDS",),
    "dispatcher.planner_interval_seconds": ("TRACE_PLANNER_INTERVAL_SECONDS",),
    "dispatcher.head_observer_interval_seconds": ("TRACE_HEAD_OBSERVER_INTERVAL_SECONDS",),
    "worker.worker_id": ("TRACE_WORKER_ID",),
    # The AWS SDK's own names: ambient (an IRSA pod has AWS_REGION), so the TRACE_ name wins.
    "object_store.s3_endpoint_url": ("TRACE_S3_ENDPOINT_URL",),
    "object_store.s3_region": ("AWS_REGION",),
    "object_store.s3_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "object_store.s3_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "user_auth.issuer": ("TRACE_USER_JWT_ISSUER",),
    "user_auth.hs256_secret": ("TRACE_USER_JWT_SECRET",),
    "user_auth.jwks_path": ("TRACE_USER_JWKS_PATH",),
    "user_auth.max_lifetime_seconds": ("TRACE_USER_JWT_MAX_LIFETIME_SECONDS",),
    "invoker.trusted_keys_dir": ("TRACE_BUNDLE_KEYS_DIR",),
    "invoker.limits.timeout_seconds": ("TRACE_INVOKER_TIMEOUT_SECONDS",),
    "invoker.lambda_function_name": ("TRACE_INVOKER_LAMBDA_FUNCTION",),
    "delivery.allowed_networks": ("TRACE_WEBHOOK_ALLOWED_NETWORKS",),
    "delivery.allow_http": ("TRACE_WEBHOOK_ALLOW_HTTP",),
    "endpoints.dispatcher": ("TRACE_DISPATCHER_ADDR",),
    "endpoints.query": ("TRACE_QUERY_ADDR",),
    "endpoints.invoker": ("TRACE_INVOKER_ADDR",),
    "queue.sqs_queue_url": ("TRACE_SQS_QUEUE_URL",),
    "queue.sqs_endpoint_url": ("TRACE_SQS_ENDPOINT_URL",),
    "queue.sqs_wait_seconds": ("TRACE_SQS_WAIT_SECONDS",),
}

# TRACE_* variables read elsewhere (the CLI, the SDK, a UDF's sandbox, test tools): not
# settings, and never reported as unknown.
OTHER_VARIABLES: Mapping[str, str] = {
    "TRACE_ADDR": "the server address the CLI and SDK dial",
    "TRACE_USER_TOKEN": "the user token the CLI and SDK send",
    "TRACE_ORG_ID": "the organisation of the CLI's chain_sync commands",
    "TRACE_LOG_LEVEL": "the CLI's log level",
    "TRACE_TASK_ENDPOINT": "set by the invoker inside a UDF's sandbox",
    "TRACE_TASK_CAPABILITY": "set by the invoker inside a UDF's sandbox",
    "TRACE_ANVIL_BIN": "the anvil program of the demo and tests",
}

POOLS_PATH = "rpc_pools"
POOL_NAMES = "TRACE_RPC_POOL_<POOL>_URL"
_POOL_SUFFIXES = ("_URL", "_URLS", "_RPS", "_CONCURRENCY", "_MAX_LAG")
# A field name that says it holds a secret: its value is never shown nor quoted.
_SECRET = re.compile(r"(^|_)(token|secret|password|passphrase|credentials?)(_|$)|access_key|(^|_)(api_)?key$")


@dataclass(frozen=True)
class Variable:
    """One settings field and the environment variable(s) that set it."""

    path: str  # "query.slots"
    name: str  # "TRACE_QUERY_SLOTS"
    aliases: tuple[str, ...]
    kind: str  # bool | int | float | str | path | str list | path list | pools
    optional: bool
    default: Any
    secret: bool

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def usual(self) -> str:
        """The name a message uses when neither is set: the older TRACE_ name where there
        is one (what charts and scripts already set), else the derived one."""
        return next((a for a in self.aliases if a.startswith("TRACE_")), self.name)


def _derive(cls: type, prefix: str) -> list[Variable]:
    hints = get_type_hints(cls)
    out: list[Variable] = []
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        tp, optional = _unwrap(hints[f.name])
        if is_dataclass(tp) and isinstance(tp, type):
            out += _derive(tp, f"{path}.")
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
        secret = bool(_SECRET.search(f.name))
        if path == POOLS_PATH:  # an open family of names (core/rpc_pools.py), URLs may hold keys
            out.append(Variable(path, POOL_NAMES, (rpc_pools.POOL_FILE,), "pools", False, default, True))
            continue
        name = "TRACE_" + path.replace(".", "_").upper()
        out.append(Variable(path, name, ALIASES.get(path, ()), _kind(path, tp), optional, default, secret))
    return out


def _unwrap(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp):
        rest = [a for a in get_args(tp) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Union[tuple(rest)]), True  # noqa: UP007
    return tp, False


def _kind(path: str, tp: Any) -> str:
    simple = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    if tp in simple:
        return simple[tp]
    args = get_args(tp)
    if get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (str, Path):
        return f"{simple[args[0]]} list"
    raise TypeError(f"settings field {path}: no environment parser for {tp!r} (core/settings_env.py)")


@cache
def variables() -> tuple[Variable, ...]:
    """Every settings field as a variable, in declaration order."""
    found = tuple(_derive(Settings, ""))
    names = [n for v in found for n in v.names]
    clash = {n for n in names if names.count(n) > 1}
    if clash:
        raise TypeError(f"settings variables named twice: {sorted(clash)}")
    return found


def by_path() -> dict[str, Variable]:
    return {v.path: v for v in variables()}


def all_names() -> tuple[str, ...]:
    """Every fixed variable name and alias (the RPC pool family is open-ended)."""
    return (*(n for v in variables() if v.kind != "pools" for n in v.names), rpc_pools.POOL_FILE)


# --- parsing ----------------------------------------------------------------------------


class _Bad(ValueError):
    """A problem with a value, as the message after ``VARIABLE: ``."""


def _parse_bool(raw: str) -> bool:
    word = raw.strip().lower()
    if word in ("1", "true", "yes"):
        return True
    if word in ("0", "false", "no"):
        return False
    raise _Bad(f"not a boolean (1/0, true/false, yes/no): {raw!r}")


def _parse_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _Bad(f"not an integer: {raw!r}") from None


def _parse_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _Bad(f"not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise _Bad(f"not a finite number: {raw!r}")
    return value


def _items(raw: str, separators: str) -> list[str]:
    return [item.strip() for item in re.split(f"[{re.escape(separators)}]", raw) if item.strip()]


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _parse_bool,
    "int": _parse_int,
    "float": _parse_float,
    "str": lambda raw: raw,
    "path": Path,
    "str list": lambda raw: tuple(_items(raw, ",")),
    # Path lists were os.pathsep-separated before (like PATH): both separators work.
    "path list": lambda raw: tuple(Path(p) for p in _items(raw, "," + os.pathsep)),
}


def _host_port(value: str) -> None:
    host, _, port = value.rpartition(":")
    if not (host and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise _Bad(f"not host:port: {value!r}")


def _networks(value: tuple[str, ...]) -> None:
    for network in value:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise _Bad(f"not a network: {network!r}") from None


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"\.?{_LABEL}(\.{_LABEL})*")


def _hosts_or_networks(value: tuple[str, ...]) -> None:
    for entry in value:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry):
                raise _Bad(f"not a network or host name: {entry!r}") from None


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise _Bad(f"not one of {', '.join(choices)}: {value!r}")

    return check


def _readable_file(value: Path) -> None:
    if not value.is_file():
        raise _Bad(f"not a readable file: {str(value)!r}")


# As DuckDB reads a size (servers/query/worker.size_bytes).
_SIZE = re.compile(r"\s*\d+(\.\d+)?\s*([KMGT]I?B|B)?\s*", re.IGNORECASE)


def _size(value: str) -> None:
    if not _SIZE.fullmatch(value):
        raise _Bad(f"not a size such as 512MB or 1GiB: {value!r}")


def _postgres_url(value: str) -> None:
    if urlsplit(value).scheme not in ("postgres", "postgresql"):
        raise _Bad("not a postgresql:// URL")  # never quoted: it may hold a password


def _sqs_wait(value: int) -> None:
    if not 0 <= value <= 20:
        raise _Bad(f"must be 0-20 (SQS long polling): {value}")


# Field path -> a check of its parsed value (beyond its type).
_CHECKS: dict[str, Callable[[Any], None]] = {
    "database_url": _postgres_url,
    "listen": _host_port,
    "metrics_listen": _host_port,
    "health_listen": _host_port,
    "endpoints.dispatcher": _host_port,
    "endpoints.query": _host_port,
    "endpoints.invoker": _host_port,
    "query.memory_limit": _size,
    "query.temp_limit": _size,
    "query.process_headroom": _size,
    "query.egress_allow": _hosts_or_networks,
    "delivery.allowed_networks": _networks,
    "queue.backend": _one_of(*QUEUE_BACKENDS),
    "queue.sqs_wait_seconds": _sqs_wait,
    "invoker.backend": _one_of("local", "lambda"),
    **{f"tls.{n}": _readable_file for n in ("cert_file", "key_file", "client_ca_file", "ca_file")},
    **{f"tls.{n}": _readable_file for n in ("client_cert_file", "client_key_file")},
}


def parse(var: Variable, name: str, raw: str) -> Any:
    """``raw`` (from variable ``name``) as ``var``'s value; ``SettingsError`` says what is wrong."""
    try:
        value = _PARSERS[var.kind](raw)
        if var.kind in ("int", "float") and value < 0:
            raise _Bad(f"must not be negative: {raw!r}")
        check = _CHECKS.get(var.path)
        if check is not None:
            check(value)
    except _Bad as exc:
        # A secret's own parser never fails (it is a str); keep its value out regardless.
        raise SettingsError(name, "not usable" if var.secret else str(exc)) from None
    return value


# --- loading ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    settings: Settings
    # Field path -> the variable that set it; a path absent here has its default.
    sources: Mapping[str, str]


def load(env: Mapping[str, str]) -> Loaded:
    """Settings from ``env``. Unset or empty variables keep their defaults; an unusable
    value, an unknown look-alike variable or a broken rule between fields raises
    ``SettingsError`` naming the variable."""
    _reject_unknown(env)
    sources: dict[str, str] = {}
    values: dict[str, Any] = {}
    for var in variables():
        if var.kind == "pools":
            pools = rpc_pools.rpc_pools_from_env(env)
            if pools:
                values[var.path] = pools
                sources[var.path] = "TRACE_RPC_POOL_*"
            continue
        picked = _pick(var, env)
        if picked is not None:
            values[var.path] = parse(var, *picked)
            sources[var.path] = picked[0]
    settings = _build(Settings, "", values)
    _check_rules(settings, lambda path: sources.get(path) or by_path()[path].usual)
    return Loaded(settings, sources)


def _pick(var: Variable, env: Mapping[str, str]) -> tuple[str, str] | None:
    given = [(n, env[n]) for n in var.names if env.get(n)]
    own = [(n, v) for n, v in given if n.startswith("TRACE_")]
    if len({v for _, v in own}) > 1:
        raise SettingsError(own[1][0], f"conflicts with {own[0][0]}: set only one of them")
    first = own or given
    return first[0] if first else None


def _build(cls: type, prefix: str, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        path = f"{prefix}{f.name}"
        tp, _ = _unwrap(hints[f.name])
        if is_dataclass(tp) and isinstance(tp, type):
            kwargs[f.name] = _build(tp, f"{path}.", values)
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def _reject_unknown(env: Mapping[str, str]) -> None:
    """A ``TRACE_*`` variable that looks like a setting but is none is an error, not a
    warning: a misspelt name silently keeps the default, and several defaults are the
    fail-closed or capacity knobs (an egress allowlist, a sandbox switch, slots) whose
    silent loss surfaces far from its cause; nobody reads a pod's start-up warnings."""
    known = set(all_names())
    words = {n.split("_")[1] for n in known if n.startswith("TRACE_")}
    for name in env:
        if not name.startswith("TRACE_") or name in known or name in OTHER_VARIABLES:
            continue
        if name.startswith(rpc_pools.PREFIX):
            if not name.endswith(_POOL_SUFFIXES):
                suffixes = ", ".join(_POOL_SUFFIXES)
                raise SettingsError(name, f"not a setting (an RPC pool variable ends in {suffixes})")
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            raise SettingsError(name, f"not a setting (did you mean {close[0]}?)")
        if name.split("_")[1] in words:
            raise SettingsError(name, "not a setting (docs/configuration.md lists them; see `trace config show`)")


def _check_rules(s: Settings, name: Callable[[str], str]) -> None:
    """Rules between fields that no single value can break alone."""
    # A UDF keeps the capability token it started with (heartbeats renew only the
    # worker's copy once half of its life is spent), so the token must outlive the UDF.
    if s.tokens.ttl_seconds < 2 * s.invoker.limits.timeout_seconds:
        raise SettingsError(
            name("tokens.ttl_seconds"),
            f"must be at least twice {name('invoker.limits.timeout_seconds')} ({s.invoker.limits.timeout_seconds:g} s)",
        )
    for cert, key in (("tls.cert_file", "tls.key_file"), ("tls.client_cert_file", "tls.client_key_file")):
        has_cert, has_key = value_of(s, cert) is not None, value_of(s, key) is not None
        if has_cert != has_key:
            missing, present = (key, cert) if has_cert else (cert, key)
            raise SettingsError(name(missing), f"required together with {name(present)}")
    if s.tls.client_ca_file and not s.tls.cert_file:
        raise SettingsError(
            name("tls.client_ca_file"),
            f"needs {name('tls.cert_file')} and {name('tls.key_file')} (mutual TLS is TLS first)",
        )
    if s.queue.backend == "sqs" and not s.queue.sqs_queue_url.startswith(("https://", "http://")):
        raise SettingsError(
            name("queue.sqs_queue_url"), f"required (an http(s) queue URL) when {name('queue.backend')}=sqs"
        )
    if s.db_pool_min > s.db_pool_max:
        raise SettingsError(name("db_pool_min"), f"must not exceed {name('db_pool_max')} ({s.db_pool_max})")


def value_of(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value
