"""Input checks that raise ``InvalidArgument`` with a reason code naming the field."""

from __future__ import annotations

import re
import uuid
from typing import Any

from trace_platform.core import strict_json
from trace_platform.core.errors import InvalidArgument

SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def require_text(field: str, value: str) -> str:
    """A string that PostgreSQL can store: no NUL, no lone surrogate."""
    try:
        strict_json.check_text(value)
    except strict_json.JsonRefused as exc:
        raise InvalidArgument(exc.reason, f"{field}: {exc.message}", field=field) from None
    return value


def require_uuid(field: str, value: object) -> str:
    """Return the canonical lowercase form of a UUID, or refuse."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument("MISSING_FIELD", f"{field} is required", field=field)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument("INVALID_UUID", f"{field} must be a UUID", field=field) from None


def require_attempt(value: int) -> int:
    if value < 1:
        raise InvalidArgument("INVALID_ATTEMPT", "attempt must be >= 1", field="attempt")
    return value


def require_slug(field: str, value: str) -> str:
    if not SLUG_RE.match(value or ""):
        raise InvalidArgument("INVALID_NAME", f"{field} must match {SLUG_RE.pattern}", field=field)
    return value


def require_json(field: str, text: str, kind: type, max_bytes: int, default: Any) -> Any:
    """Parse a JSON text field of an expected top-level type with the strict parser
    (bounded in size and depth; no NaN, NUL, lone surrogates or duplicate keys)."""
    if not text:
        return default
    try:
        value = strict_json.loads(text, max_bytes=max_bytes)
    except strict_json.JsonRefused as exc:
        raise InvalidArgument(exc.reason, f"{field}: {exc.message}", field=field) from None
    if not isinstance(value, kind):
        raise InvalidArgument("INVALID_JSON", f"{field} must be a JSON {kind.__name__}", field=field)
    return value


DATASET_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}(\.[a-z][a-z0-9_]{0,62}){0,2}$")


def require_dataset_name(value: str) -> str:
    """Registry names: dot-separated slugs, such as ``mainnet.blocks``."""
    if not DATASET_NAME_RE.match(value or ""):
        raise InvalidArgument("INVALID_DATASET_NAME", "dataset must be dot-separated slugs", field="dataset")
    return value


def clamp_limit(limit: int, default: int, maximum: int) -> int:
    """0 (unset) means ``default``; anything else is clamped to ``[1, maximum]``."""
    if limit == 0:
        return default
    return max(1, min(limit, maximum))
