"""Object locations as URIs (``s3://bucket/key`` or ``file:///abs/path``) and the
prefix checks that authorize them. Pure string logic, no I/O.

Every check normalizes first and refuses anything ambiguous (``..``, ``.``, empty
segments, backslashes, control characters), so a prefix match cannot be fooled by
path tricks; prefixes always compare with a trailing ``/`` so ``s3://b/data`` never
matches ``s3://b/data2/``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from trace_platform.core.errors import PermissionDenied

SCHEMES = ("s3", "file")


_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x1f\x7f\\]")


def _bad_path(path: str) -> bool:
    if _CONTROL_OR_BACKSLASH.search(path):
        return True
    segments = path.split("/")
    return any(seg in (".", "..") for seg in segments) or "" in segments[1:-1]


def normalize_prefix(uri: str) -> str | None:
    """``scheme://bucket/path/`` with exactly one trailing slash, or None if malformed."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES or parts.query or parts.fragment:
        return None
    if parts.scheme == "s3" and not parts.netloc:
        return None
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        return None
    path = parts.path.rstrip("/") + "/"
    if _bad_path(path):
        return None
    return f"{parts.scheme}://{parts.netloc}{path}"


def is_under(uri: str, prefix: str) -> bool:
    """True when ``uri`` (an object or a prefix) lies inside ``prefix``."""
    inner, outer = normalize_prefix(uri), normalize_prefix(prefix)
    return inner is not None and outer is not None and inner.startswith(outer)


def is_relative_key(key: str) -> bool:
    """A key relative to a dataset prefix: no scheme, no leading slash, no traversal."""
    if not key or key.startswith("/") or "://" in key or key.endswith("/"):
        return False
    return not _bad_path("/" + key)


def join(prefix: str, key: str) -> str:
    if not is_relative_key(key):
        raise PermissionDenied("OBJECT_OUTSIDE_PREFIX", "object key must be relative to the dataset prefix")
    return prefix.rstrip("/") + "/" + key


def require_under_any(uri: str, prefixes: tuple[str, ...], reason: str) -> None:
    """Fail closed unless ``uri`` lies under one of ``prefixes`` (an empty tuple denies)."""
    if not any(is_under(uri, p) for p in prefixes):
        raise PermissionDenied(reason, "storage location is outside the granted prefixes")


def attempt_prefix(scratch_uri: str, task_id: str, attempt: int) -> str:
    """The write prefix of one task attempt: ``<scratch>/<task_id>/<attempt>/``."""
    return f"{scratch_uri.rstrip('/')}/{task_id}/{attempt}/"
