"""Strict YAML loading for operator-written config, and a scan for URLs and secrets.

``load_strict`` is ``yaml.safe_load`` with the YAML features that hide what a
document says turned off: duplicate keys (PyYAML keeps the last one silently),
aliases (and with them exponential expansion; merge keys stay unknown keys), and
documents larger than a cap. ``scan_for_secrets`` walks the loaded tree and refuses
any key or string that looks like a URL or a credential. Errors name the path of
the offending node and never echo its value (it may be a secret).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from trace_platform.core.errors import InvalidArgument

MAX_YAML_BYTES = 64 * 1024

YAML_SYNTAX = "YAML_SYNTAX"
YAML_TOO_LARGE = "YAML_TOO_LARGE"
DUPLICATE_KEY = "DUPLICATE_KEY"
YAML_ALIAS = "YAML_ALIAS"
URL_IN_CONFIG = "URL_IN_CONFIG"
SECRET_IN_CONFIG = "SECRET_IN_CONFIG"

_URL_RES = (
    re.compile(r"://"),
    re.compile(r"^[a-z][a-z0-9+.-]*:(//|[^\s/]+@)", re.IGNORECASE),  # scheme: or user@host
    re.compile(r"^(localhost|\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:]+\])(:\d+)?(/|$)", re.IGNORECASE),
    re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?/", re.IGNORECASE),  # host.tld/path
    re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}:\d+$", re.IGNORECASE),  # host.tld:port
)
_SECRET_RES = (
    re.compile(r"^(0x)?[0-9a-f]{32,}$", re.IGNORECASE),  # hex keys (private keys, API keys)
    re.compile(r"^eyJ[\w-]+\.[\w-]+"),  # JWT
    re.compile(r"^(AKIA|ASIA)[0-9A-Z]{16}$"),  # AWS access key id
    re.compile(r"^(sk|pk|rk|ghp|gho|ghs|xox[abp])[-_][\w-]{8,}$"),  # common token prefixes
    re.compile(r"^(bearer|basic)\s+\S+", re.IGNORECASE),
    re.compile(r"-----BEGIN [A-Z ]*KEY-----"),
)
_TOKENISH = re.compile(r"^[A-Za-z0-9+/=_-]{24,}$")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases and duplicate mapping keys."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise InvalidArgument(
                YAML_ALIAS, f"YAML aliases (*name) are not allowed (line {event.start_mark.line + 1})"
            )
        node: Node | None = super().compose_node(parent, index)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # No flatten_mapping: a merge key '<<' stays an ordinary (and so unknown) key.
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                hash(key)
            except TypeError:
                raise InvalidArgument(
                    YAML_SYNTAX, f"unhashable mapping key (line {key_node.start_mark.line + 1})"
                ) from None
            if key in mapping:
                raise InvalidArgument(
                    DUPLICATE_KEY,
                    f"duplicate key (line {key_node.start_mark.line + 1})",
                    line=str(key_node.start_mark.line + 1),
                )
            mapping[key] = self.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
        return mapping


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_mapping)


def load_strict(text: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Parse one YAML document strictly; raise ``InvalidArgument`` on anything doubtful."""
    if len(text.encode()) > max_bytes:
        raise InvalidArgument(YAML_TOO_LARGE, f"YAML document exceeds {max_bytes} bytes")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise InvalidArgument(YAML_SYNTAX, f"invalid YAML near line {line}: {exc.problem}") from None
    except yaml.YAMLError:
        raise InvalidArgument(YAML_SYNTAX, "invalid YAML") from None


def looks_like_url(value: str) -> bool:
    return any(r.search(value) for r in _URL_RES)


def looks_like_secret(value: str) -> bool:
    if any(r.search(value) for r in _SECRET_RES):
        return True
    # A long token with letters and digits and no word separators reads as a key, not a name.
    return bool(
        _TOKENISH.fullmatch(value)
        and "_" not in value
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
    )


def join_path(parent: str, key: object) -> str:
    return f"{parent}.{key}" if parent else str(key)


def scan_for_secrets(tree: Any, path: str = "") -> None:
    """Refuse URLs and credential-looking strings anywhere in a loaded document."""
    where = path or "(document root)"
    if isinstance(tree, dict):
        for key, value in tree.items():
            if isinstance(key, str) and (looks_like_url(key) or looks_like_secret(key)):
                reason = URL_IN_CONFIG if looks_like_url(key) else SECRET_IN_CONFIG
                raise InvalidArgument(reason, f"a key under {where} looks like a URL or secret", field=where)
            scan_for_secrets(value, join_path(path, key))
    elif isinstance(tree, list):
        for i, item in enumerate(tree):
            scan_for_secrets(item, f"{path}[{i}]")
    elif isinstance(tree, str):
        if looks_like_url(tree):
            raise InvalidArgument(
                URL_IN_CONFIG, f"{where} looks like a URL; config names RPC pools, never URLs", field=where
            )
        if looks_like_secret(tree):
            raise InvalidArgument(
                SECRET_IN_CONFIG, f"{where} looks like a secret; secrets never go in config", field=where
            )
