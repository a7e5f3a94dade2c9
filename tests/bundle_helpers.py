"""Build real and hostile UDF bundles in tests (with zipfile, no platform builder)."""

from __future__ import annotations

import hashlib
import stat
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trace_platform.core.bundle_manifest import MANIFEST_NAME, sign_envelope


def file_entry(path: str, data: bytes, executable: bool = False) -> dict[str, Any]:
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "executable": executable}


def manifest_body(runtime: str, entrypoint: str, files: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"format": 1, "runtime": runtime, "entrypoint": entrypoint, "files": list(files)}


def zinfo(name: str, mode: int = stat.S_IFREG | 0o644, compress: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = compress
    return info


@dataclass
class Member:
    """One zip entry: a name (or a prepared ZipInfo) and its bytes."""

    name: str | zipfile.ZipInfo
    data: bytes


def write_zip(path: Path, members: Sequence[Member]) -> Path:
    with zipfile.ZipFile(path, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on the duplicate names some tests want
        for m in members:
            info = m.name if isinstance(m.name, zipfile.ZipInfo) else zinfo(m.name)
            zf.writestr(info, m.data)
    return path


def signed_zip(
    path: Path,
    key: Ed25519PrivateKey,
    runtime: str,
    entrypoint: str,
    files: dict[str, bytes],
    *,
    executables: Iterable[str] = (),
    extra: Sequence[Member] = (),
    manifest_files: list[dict[str, Any]] | None = None,
) -> Path:
    """A bundle whose manifest lists ``files`` (or ``manifest_files`` verbatim), signed
    by ``key``; ``extra`` members are added to the zip unlisted."""
    exe = set(executables)
    listed = manifest_files if manifest_files is not None else [file_entry(n, d, n in exe) for n, d in files.items()]
    envelope = sign_envelope(manifest_body(runtime, entrypoint, listed), key)
    members = [Member(MANIFEST_NAME, envelope)]
    members += [Member(zinfo(n, stat.S_IFREG | (0o755 if n in exe else 0o644)), d) for n, d in files.items()]
    return write_zip(path, [*members, *extra])


def bundle_from_dir(path: Path, key: Ed25519PrivateKey, runtime: str, entrypoint: str, source: Path) -> Path:
    files = {p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()}
    exe = [n for n in files if (source / n).stat().st_mode & stat.S_IXUSR]
    return signed_zip(path, key, runtime, entrypoint, files, executables=exe)
