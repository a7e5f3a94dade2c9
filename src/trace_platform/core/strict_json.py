"""The one JSON parser for untrusted input (RPC fields, task artifacts, manifests).

Invariant: a value this returns can be stored in PostgreSQL ``jsonb``/``text`` and
written back out as standard JSON, so nothing it accepts can fail later, in the
database, as an INTERNAL error. Hence it refuses, each with a stable reason code:

- ``INVALID_JSON``: not JSON; ``NaN``/``Infinity`` (Python's extensions); a number
  that overflows to infinity (``1e400``); an integer beyond Python's digit limit;
- ``DUPLICATE_KEY``: an object naming a key twice (which one wins is parser-defined);
- ``NUL_CHARACTER``: ``\\u0000`` in a string or key (``jsonb`` and ``text`` refuse it);
- ``INVALID_UNICODE``: a lone surrogate (``\\ud800``), which is not encodable as UTF-8;
- ``JSON_TOO_DEEP``: nesting beyond ``max_depth`` (the C scanner would otherwise raise
  RecursionError at about 1,000 levels, and callers walk values recursively);
- ``PAYLOAD_TOO_LARGE``: more than ``max_bytes`` of UTF-8.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

DEFAULT_MAX_DEPTH = 64
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JsonRefused(ValueError):
    """The input is refused; ``reason`` is the code (see the module docstring)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _constant(name: str) -> Any:
    raise JsonRefused("INVALID_JSON", f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused("INVALID_JSON", "a number is out of range")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRefused("DUPLICATE_KEY", "an object names a key twice")
        out[key] = value
    return out


def check_text(value: str) -> None:
    """Refuse a string PostgreSQL cannot store (NUL) or UTF-8 cannot encode (surrogate)."""
    bad = _UNSTORABLE.search(value)
    if bad is None:
        return
    if bad.group() == "\x00":
        raise JsonRefused("NUL_CHARACTER", "NUL characters are not allowed")
    raise JsonRefused("INVALID_UNICODE", "lone surrogates are not allowed")


def _check_tree(root: Any, max_depth: int) -> None:
    # Iterative, so a deep value cannot exhaust the stack here either.
    stack: list[tuple[Any, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            check_text(value)
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise JsonRefused("JSON_TOO_DEEP", f"nested deeper than {max_depth} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def loads(data: str | bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``data`` (UTF-8 if bytes) strictly; raises ``JsonRefused``."""
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise JsonRefused("PAYLOAD_TOO_LARGE", f"more than {max_bytes} bytes")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused("INVALID_UNICODE", "not UTF-8") from None
    try:
        value = json.loads(data, object_pairs_hook=_unique, parse_constant=_constant, parse_float=_finite)
    except JsonRefused:
        raise
    except RecursionError:
        raise JsonRefused("JSON_TOO_DEEP", f"nested deeper than {max_depth} levels") from None
    except ValueError:  # JSONDecodeError, and integers beyond Python's digit limit
        raise JsonRefused("INVALID_JSON", "not valid JSON") from None
    _check_tree(value, max_depth)
    return value
