"""Verify and extract signed UDF bundles (zip + ``bundle_manifest.json``), and build them.

Order of checks, all fail closed with a reason code:

1. archive: size cap, a readable zip, at most ``max_files`` entries;
2. every central-directory entry: safe name (no absolute path, ``..``, backslash,
   control character), no duplicate, no symlink or device/special file (Unix mode in
   the external attributes), not encrypted, declared sizes within caps and a bounded
   compression ratio;
3. the manifest envelope: signed with Ed25519 by a trusted key, then parsed;
4. the listing: every file entry is in the manifest and every manifest file is in the
   zip, with the same declared size;
5. extraction into a fresh 0700 directory, streaming each entry with a byte cap (the
   declared sizes are not trusted), hashing as it goes; any mismatch aborts and
   removes the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trace_platform.core.bundle_manifest import (
    MANIFEST_NAME,
    BundleRejected,
    FileEntry,
    Manifest,
    TrustedKeys,
    check_entrypoint,
    check_member_path,
    sign_envelope,
    verify_envelope,
)

CHUNK = 64 * 1024
# Entries smaller than this are not held to the ratio cap (tiny files compress oddly).
RATIO_FLOOR_BYTES = 64 * 1024


@dataclass(frozen=True)
class BundleLimits:
    max_archive_bytes: int = 64 * 1024 * 1024
    max_files: int = 2048
    max_total_bytes: int = 256 * 1024 * 1024
    max_file_bytes: int = 128 * 1024 * 1024
    max_compression_ratio: float = 100.0


@dataclass(frozen=True)
class ExtractedBundle:
    root: Path
    manifest: Manifest
    entry_file: str


def _unix_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) & 0xFFFF if info.create_system == 3 else 0


def _check_entry(info: zipfile.ZipInfo, limits: BundleLimits) -> None:
    for name in {info.orig_filename, info.filename}:
        check_member_path(name)
    mode = _unix_mode(info)
    if mode and stat.S_ISLNK(mode):
        raise BundleRejected("BUNDLE_SYMLINK", "symlinks are not allowed in bundles")
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise BundleRejected("BUNDLE_SPECIAL_FILE", "device, fifo or socket entries are not allowed")
    if info.flag_bits & 0x1:
        raise BundleRejected("BUNDLE_ENCRYPTED", "encrypted entries are not allowed")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleRejected("BUNDLE_COMPRESSION_UNSUPPORTED", "only stored and deflated entries are accepted")
    if info.file_size > limits.max_file_bytes:
        raise BundleRejected("BUNDLE_TOO_LARGE", "a bundle file exceeds the size cap")
    _check_ratio(info.file_size, info.compress_size, limits)


def _check_ratio(uncompressed: int, compressed: int, limits: BundleLimits) -> None:
    if uncompressed > RATIO_FLOOR_BYTES and uncompressed > limits.max_compression_ratio * max(compressed, 1):
        raise BundleRejected("BUNDLE_COMPRESSION_RATIO", "compression ratio too high (zip bomb)")


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith("/") or stat.S_ISDIR(_unix_mode(info))


def _read_capped(stream: IO[bytes], cap: int) -> bytes:
    data = stream.read(cap + 1)
    if len(data) > cap:
        raise BundleRejected("BUNDLE_MANIFEST_INVALID", "manifest too large")
    return data


def inspect_archive(zf: zipfile.ZipFile, trusted: TrustedKeys, limits: BundleLimits) -> Manifest:
    """Checks 1-4: everything that needs no decompression except the manifest itself."""
    infos = zf.infolist()
    if len(infos) > limits.max_files + 1:
        raise BundleRejected("BUNDLE_TOO_MANY_FILES", f"more than {limits.max_files} entries")
    seen: set[str] = set()
    total = 0
    compressed = 0
    for info in infos:
        _check_entry(info, limits)
        key = info.filename.rstrip("/")
        if key in seen:
            raise BundleRejected("BUNDLE_DUPLICATE_ENTRY", "duplicate name in bundle")
        seen.add(key)
        total += info.file_size
        compressed += info.compress_size
    if total > limits.max_total_bytes:
        raise BundleRejected("BUNDLE_TOO_LARGE", "uncompressed bundle exceeds the size cap")
    _check_ratio(total, compressed, limits)
    if MANIFEST_NAME not in seen:
        raise BundleRejected("BUNDLE_MANIFEST_MISSING", f"{MANIFEST_NAME} missing at the bundle root")
    with zf.open(MANIFEST_NAME) as fh:
        manifest = verify_envelope(_read_capped(fh, 1024 * 1024), trusted)
    listed = manifest.by_path()
    in_zip = {i.filename: i for i in infos if not _is_dir(i) and i.filename != MANIFEST_NAME}
    if len(listed) > limits.max_files:
        raise BundleRejected("BUNDLE_TOO_MANY_FILES", f"more than {limits.max_files} files")
    for name in in_zip:
        if name not in listed:
            raise BundleRejected("BUNDLE_FILE_UNLISTED", "bundle holds a file the manifest does not list")
    for path, entry in listed.items():
        found = in_zip.get(path)
        if found is None:
            raise BundleRejected("BUNDLE_FILE_MISSING", "manifest lists a file the bundle does not hold")
        if found.file_size != entry.size:
            raise BundleRejected("BUNDLE_FILE_SIZE_MISMATCH", "declared size differs from the manifest")
    return manifest


def _private_dir(parent: Path | None) -> Path:
    # mkdtemp creates the directory with mode 0700 and a name nobody can predict.
    return Path(tempfile.mkdtemp(prefix="bundle-", dir=parent))


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, entry: FileEntry, root: Path) -> None:
    target = root.joinpath(*entry.path.split("/"))
    if not target.resolve().is_relative_to(root.resolve()):
        raise BundleRejected("BUNDLE_PATH_TRAVERSAL", "entry resolves outside the bundle directory")
    parent = root
    for part in entry.path.split("/")[:-1]:
        parent = parent / part
        with contextlib.suppress(FileExistsError):
            parent.mkdir(mode=0o700)
        if parent.is_symlink() or not parent.is_dir():
            raise BundleRejected("BUNDLE_PATH_CONFLICT", "a file and a directory share a name")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise BundleRejected("BUNDLE_PATH_CONFLICT", "two entries extract to the same path") from None
    digest = hashlib.sha256()
    written = 0
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > entry.size:
                raise BundleRejected("BUNDLE_FILE_SIZE_MISMATCH", "entry is larger than the manifest says")
            digest.update(chunk)
            out.write(chunk)
    if written != entry.size:
        raise BundleRejected("BUNDLE_FILE_SIZE_MISMATCH", "entry is smaller than the manifest says")
    if digest.hexdigest() != entry.sha256:
        raise BundleRejected("BUNDLE_FILE_HASH_MISMATCH", "entry content does not match its sha256")
    os.chmod(target, 0o555 if entry.executable else 0o444)


def _seal_dirs(root: Path, root_mode: int) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        os.chmod(dirpath, 0o555 if Path(dirpath) != root else root_mode)


def remove_tree(root: Path) -> None:
    """Remove an extracted bundle (its directories are read-only once sealed)."""
    if not root.exists():
        return
    for dirpath, _dirs, _files in os.walk(root):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
    shutil.rmtree(root, ignore_errors=True)


def extract_bundle(
    archive: Path,
    trusted: TrustedKeys,
    limits: BundleLimits | None = None,
    parent: Path | None = None,
    root_mode: int = 0o500,
) -> ExtractedBundle:
    """Verify ``archive`` and extract it into a fresh private directory under ``parent``.

    The directory is 0700 while it is written; afterwards everything in it is read-only
    and the root gets ``root_mode`` (0555 when ``parent`` is itself private and another
    uid must read the bundle)."""
    limits = limits or BundleLimits()
    try:
        size = archive.stat().st_size
    except OSError:
        raise BundleRejected("BUNDLE_NOT_FOUND", "bundle archive not readable") from None
    if size > limits.max_archive_bytes:
        raise BundleRejected("BUNDLE_TOO_LARGE", "bundle archive exceeds the size cap")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise BundleRejected("BUNDLE_NOT_A_ZIP", "bundle is not a readable zip archive") from None
    root = _private_dir(parent)
    try:
        with zf:
            manifest = inspect_archive(zf, trusted, limits)
            infos = {i.filename: i for i in zf.infolist()}
            for entry in sorted(manifest.files, key=lambda e: e.path):
                _write_entry(zf, infos[entry.path], entry, root)
        _seal_dirs(root, root_mode)
        return ExtractedBundle(root, manifest, check_entrypoint(manifest))
    except BundleRejected:
        remove_tree(root)
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        # A corrupt stream (bad CRC, truncated deflate data) is a hash mismatch in effect.
        remove_tree(root)
        raise BundleRejected("BUNDLE_CORRUPT", "bundle entry could not be read") from None
    except BaseException:
        remove_tree(root)
        raise


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_bundle(source: Path, runtime: str, entrypoint: str, private_key: Ed25519PrivateKey, out: Path) -> Manifest:
    """Zip every regular file under ``source`` with a signed manifest. Symlinks and
    special files in the source are refused; the executable bit is recorded."""
    entries: list[FileEntry] = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if path.is_symlink():
            raise BundleRejected("BUNDLE_SYMLINK", f"{rel}: symlinks cannot be bundled")
        if path.is_dir() or rel == MANIFEST_NAME:
            continue
        if not path.is_file():
            raise BundleRejected("BUNDLE_SPECIAL_FILE", f"{rel}: not a regular file")
        check_member_path(rel)
        executable = bool(path.stat().st_mode & stat.S_IXUSR)
        entries.append(FileEntry(rel, file_sha256(path), path.stat().st_size, executable))
    manifest = Manifest(runtime, entrypoint, tuple(entries))
    check_entrypoint(manifest)
    envelope = sign_envelope(manifest.to_json(), private_key)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(_zinfo(MANIFEST_NAME, 0o644), envelope)
        for entry in entries:
            with (
                (source / entry.path).open("rb") as src,
                zf.open(_zinfo(entry.path, 0o755 if entry.executable else 0o644), "w") as dst,
            ):
                shutil.copyfileobj(src, dst, CHUNK)
    tmp.replace(out)
    return manifest


def _zinfo(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = (stat.S_IFREG | mode) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info
