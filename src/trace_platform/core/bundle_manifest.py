"""The signed manifest of a UDF bundle: its shape, canonical form, entrypoint rules and
Ed25519 signatures.

``bundle_manifest.json`` at the root of the zip is an envelope::

    {"manifest": {"format": 1, "runtime": "python", "entrypoint": "handler.main",
                  "files": [{"path": "handler.py", "sha256": "...", "size": 12, "executable": false}]},
     "signature": {"alg": "ed25519", "key_id": "...", "value": "<base64>"}}

The signature covers the canonical JSON of ``manifest`` (sorted keys, no spaces,
ASCII). Everything here fails closed with a ``BundleRejected`` reason code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trace_platform.core import strict_json
from trace_platform.core.errors import FailedPrecondition, PermissionDenied

MANIFEST_NAME = "bundle_manifest.json"
FORMAT_VERSION = 1
ALG = "ed25519"
RUNTIMES = ("python", "node", "rust", "custom")
BOOTSTRAP = "bootstrap"
NODE_EXTENSIONS = (".js", ".mjs", ".cjs")
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_PATH_CHARS = 1024
MAX_COMPONENT_CHARS = 255

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PYTHON_ENTRY_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})+$")
NODE_ENTRY_RE = re.compile(r"^([A-Za-z0-9_\-]+/)*[A-Za-z0-9_\-]+\.[A-Za-z_$][A-Za-z0-9_$]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BundleRejected(FailedPrecondition):
    """A bundle that fails validation. The reason code names the check."""


class BundleSignatureError(PermissionDenied):
    """Missing or bad signature, or a key the platform does not trust."""


def check_member_path(name: str) -> None:
    """Refuse names that could land outside the extraction directory or are ambiguous."""
    if not name or len(name) > MAX_PATH_CHARS:
        raise BundleRejected("BUNDLE_PATH_INVALID", "empty or overlong path")
    if "\x00" in name or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise BundleRejected("BUNDLE_PATH_INVALID", "control character in path")
    if "\\" in name:
        raise BundleRejected("BUNDLE_PATH_INVALID", "backslash in path")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise BundleRejected("BUNDLE_PATH_ABSOLUTE", "absolute path in bundle")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise BundleRejected("BUNDLE_PATH_TRAVERSAL", "'..' in bundle path")
    if any(p in ("", ".") or len(p) > MAX_COMPONENT_CHARS for p in parts):
        raise BundleRejected("BUNDLE_PATH_INVALID", "empty, '.' or overlong path component")


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size, "executable": self.executable}


@dataclass(frozen=True)
class Manifest:
    runtime: str
    entrypoint: str
    files: tuple[FileEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "runtime": self.runtime,
            "entrypoint": self.entrypoint,
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
        }

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _invalid(message: str) -> BundleRejected:
    return BundleRejected("BUNDLE_MANIFEST_INVALID", message)


def _file_entry(raw: Any) -> FileEntry:
    if not isinstance(raw, dict) or set(raw) - {"path", "sha256", "size", "executable"}:
        raise _invalid("file entries are objects with path, sha256, size, executable")
    path, digest, size, exe = raw.get("path"), raw.get("sha256"), raw.get("size"), raw.get("executable", False)
    if not isinstance(path, str) or not isinstance(digest, str) or not SHA256_RE.match(digest):
        raise _invalid("file entry needs a path and a lowercase hex sha256")
    if type(size) is not int or size < 0 or not isinstance(exe, bool):
        raise _invalid("file size must be a non-negative integer, executable a boolean")
    check_member_path(path)
    if path.endswith("/") or path == MANIFEST_NAME:
        raise _invalid("manifest lists a directory or itself")
    return FileEntry(path, digest, size, exe)


def parse_manifest(body: Any) -> Manifest:
    """Structural checks of the signed body (after the signature has been verified)."""
    if not isinstance(body, dict) or set(body) - {"format", "runtime", "entrypoint", "files"}:
        raise _invalid("manifest must be an object with format, runtime, entrypoint, files")
    if body.get("format") != FORMAT_VERSION:
        raise _invalid("unsupported manifest format")
    runtime, entrypoint, files = body.get("runtime"), body.get("entrypoint"), body.get("files")
    if runtime not in RUNTIMES:
        raise BundleRejected("BUNDLE_RUNTIME_UNSUPPORTED", f"runtime must be one of {', '.join(RUNTIMES)}")
    if not isinstance(entrypoint, str) or not isinstance(files, list):
        raise _invalid("entrypoint must be a string and files a list")
    entries = tuple(_file_entry(f) for f in files)
    if len({e.path for e in entries}) != len(entries):
        raise BundleRejected("BUNDLE_DUPLICATE_ENTRY", "manifest lists a path twice")
    manifest = Manifest(str(runtime), entrypoint, entries)
    check_entrypoint(manifest)
    return manifest


def entry_file(runtime: str, entrypoint: str, listed: Iterable[str]) -> str:
    """The bundle file an entrypoint resolves to, or ``BUNDLE_ENTRYPOINT_INVALID``."""
    names = set(listed)
    bad = BundleRejected("BUNDLE_ENTRYPOINT_INVALID", f"entrypoint {entrypoint[:80]!r} is not valid for {runtime}")
    if runtime == "python":
        if not PYTHON_ENTRY_RE.match(entrypoint):
            raise bad
        module = entrypoint.rsplit(".", 1)[0].replace(".", "/")
        for candidate in (f"{module}.py", f"{module}/__init__.py"):
            if candidate in names:
                return candidate
        raise bad
    if runtime == "node":
        if not NODE_ENTRY_RE.match(entrypoint):
            raise bad
        base = entrypoint.rsplit(".", 1)[0]
        for ext in NODE_EXTENSIONS:
            if base + ext in names:
                return base + ext
        raise bad
    if entrypoint not in ("", BOOTSTRAP) or BOOTSTRAP not in names:
        raise bad
    return BOOTSTRAP


def check_entrypoint(manifest: Manifest) -> str:
    path = entry_file(manifest.runtime, manifest.entrypoint, (f.path for f in manifest.files))
    if manifest.runtime in ("rust", "custom") and not manifest.by_path()[path].executable:
        raise BundleRejected("BUNDLE_ENTRYPOINT_INVALID", "bootstrap must be listed as executable")
    return path


# --- keys and signatures -------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class TrustedKeys:
    """The bundle-signing public keys the platform accepts, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @staticmethod
    def of(*public_keys: Ed25519PublicKey) -> TrustedKeys:
        return TrustedKeys({key_id(k): k for k in public_keys})

    @staticmethod
    def from_dir(directory: Path) -> TrustedKeys:
        """Every ``*.pub`` PEM file in a directory (none: an empty set, which trusts nothing)."""
        keys = []
        for path in sorted(directory.glob("*.pub")) if directory.is_dir() else []:
            keys.append(load_public_key(path.read_bytes()))
        return TrustedKeys.of(*keys)


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def sign_envelope(body: dict[str, Any], private_key: Ed25519PrivateKey) -> bytes:
    """The ``bundle_manifest.json`` bytes for a manifest body signed by ``private_key``."""
    signature = private_key.sign(canonical_json(body))
    envelope = {
        "manifest": body,
        "signature": {
            "alg": ALG,
            "key_id": key_id(private_key.public_key()),
            "value": base64.b64encode(signature).decode(),
        },
    }
    return json.dumps(envelope, indent=2, sort_keys=True).encode()


def verify_envelope(raw: bytes, trusted: TrustedKeys) -> Manifest:
    """Verify the signature over the canonical body, then parse the body."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _invalid("manifest too large")
    try:
        envelope = strict_json.loads(raw, max_bytes=MAX_MANIFEST_BYTES)
    except strict_json.JsonRefused as exc:
        raise _invalid(f"manifest is not strict JSON: {exc.message}") from None
    if not isinstance(envelope, dict) or "manifest" not in envelope:
        raise _invalid("manifest envelope must hold 'manifest' and 'signature'")
    sig = envelope.get("signature")
    if not isinstance(sig, dict) or not sig.get("value"):
        raise BundleSignatureError("BUNDLE_SIGNATURE_MISSING", "bundle manifest is not signed")
    if sig.get("alg") != ALG or not isinstance(sig.get("key_id"), str) or not isinstance(sig.get("value"), str):
        raise BundleSignatureError("BUNDLE_SIGNATURE_INVALID", "unsupported signature algorithm or shape")
    public_key = trusted.keys.get(sig["key_id"])
    if public_key is None:
        raise BundleSignatureError("BUNDLE_KEY_UNTRUSTED", "bundle signed by a key the platform does not trust")
    try:
        signature = base64.b64decode(sig["value"], validate=True)
        public_key.verify(signature, canonical_json(envelope["manifest"]))
    except (InvalidSignature, binascii.Error, ValueError):
        raise BundleSignatureError("BUNDLE_SIGNATURE_INVALID", "bundle signature does not verify") from None
    return parse_manifest(envelope["manifest"])
