"""Signed bundles: a valid bundle round-trips; every hostile bundle is refused with its
own reason code and leaves nothing behind."""

from __future__ import annotations

import json
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.bundle_helpers import Member, file_entry, manifest_body, signed_zip, write_zip, zinfo
from trace_platform.cli.bundle import bundle_group
from trace_platform.core.bundle_manifest import MANIFEST_NAME, TrustedKeys, sign_envelope
from trace_platform.core.bundles import BundleLimits, ExtractedBundle, build_bundle, extract_bundle
from trace_platform.core.errors import TraceError

HANDLER = b"def main(event):\n    return {'ok': True}\n"


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(key: Ed25519PrivateKey) -> TrustedKeys:
    return TrustedKeys.of(key.public_key())


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "extract"
    d.mkdir()
    return d


def rejected(archive: Path, trusted: TrustedKeys, out_dir: Path, limits: BundleLimits | None = None) -> str:
    """Extract, expect a refusal, check nothing was left in (or written outside) out_dir."""
    with pytest.raises(TraceError) as info:
        extract_bundle(archive, trusted, limits, out_dir)
    assert list(out_dir.iterdir()) == [], "a refused bundle left files behind"
    assert not (out_dir.parent / "evil.py").exists()
    return info.value.reason


def patch_entry(archive: Path, name: str, *, local_off: int, central_off: int, value: int, fmt: str = "<I") -> None:
    """Overwrite one field of an entry's local and central headers (zipfile will not write lies)."""
    raw = bytearray(archive.read_bytes())
    encoded = name.encode()
    for sig, off, name_off in ((b"PK\x03\x04", local_off, 30), (b"PK\x01\x02", central_off, 46)):
        pos = raw.find(sig)
        while pos != -1:
            if raw[pos + name_off : pos + name_off + len(encoded)] == encoded:
                struct.pack_into(fmt, raw, pos + off, value)
            pos = raw.find(sig, pos + 4)
    archive.write_bytes(bytes(raw))


def ok_zip(tmp_path: Path, key: Ed25519PrivateKey, **files: bytes) -> Path:
    return signed_zip(tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER, **files})


def test_valid_bundle_extracts_read_only_into_private_dir(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = ok_zip(tmp_path, key, **{"lib/util.py": b"X = 1\n"})
    got = extract_bundle(archive, trusted, parent=out_dir)
    assert isinstance(got, ExtractedBundle) and got.entry_file == "handler.py"
    assert got.root.parent == out_dir
    assert (got.root / "handler.py").read_bytes() == HANDLER
    assert (got.root / "lib" / "util.py").read_bytes() == b"X = 1\n"
    assert stat.S_IMODE(got.root.stat().st_mode) == 0o500
    assert stat.S_IMODE((got.root / "handler.py").stat().st_mode) == 0o444
    assert not (got.root / MANIFEST_NAME).exists()


def test_build_bundle_records_executable_and_refuses_symlinks(tmp_path: Path, key, trusted, out_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "bootstrap").write_bytes(b"#!/bin/sh\necho '{}'\n")
    (src / "bootstrap").chmod(0o755)
    build_bundle(src, "rust", "bootstrap", key, tmp_path / "r.zip")
    got = extract_bundle(tmp_path / "r.zip", trusted, parent=out_dir)
    assert stat.S_IMODE((got.root / "bootstrap").stat().st_mode) == 0o555
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(TraceError) as info:
        build_bundle(src, "rust", "bootstrap", key, tmp_path / "r2.zip")
    assert info.value.reason == "BUNDLE_SYMLINK"


def test_unsigned_bundle(tmp_path: Path, trusted, out_dir) -> None:
    body = manifest_body("python", "handler.main", [file_entry("handler.py", HANDLER)])
    archive = write_zip(
        tmp_path / "b.zip",
        [Member(MANIFEST_NAME, json.dumps({"manifest": body}).encode()), Member("handler.py", HANDLER)],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_SIGNATURE_MISSING"


def test_tampered_manifest_fails_signature(tmp_path: Path, key, trusted, out_dir) -> None:
    envelope = json.loads(
        sign_envelope(manifest_body("python", "handler.main", [file_entry("handler.py", HANDLER)]), key)
    )
    envelope["manifest"]["files"][0]["sha256"] = "0" * 64
    archive = write_zip(
        tmp_path / "b.zip", [Member(MANIFEST_NAME, json.dumps(envelope).encode()), Member("handler.py", HANDLER)]
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_SIGNATURE_INVALID"


def test_untrusted_key(tmp_path: Path, trusted, out_dir) -> None:
    archive = ok_zip(tmp_path, Ed25519PrivateKey.generate())
    assert rejected(archive, trusted, out_dir) == "BUNDLE_KEY_UNTRUSTED"


def test_hash_mismatch(tmp_path: Path, key, trusted, out_dir) -> None:
    other = HANDLER.replace(b"True", b"Fals")  # same size, other bytes
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": other},
        manifest_files=[file_entry("handler.py", HANDLER)],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_FILE_HASH_MISMATCH"


def test_size_mismatch(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER + b"#"},
        manifest_files=[file_entry("handler.py", HANDLER)],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_FILE_SIZE_MISMATCH"


def test_forged_declared_size_is_not_trusted(tmp_path: Path, key, trusted, out_dir) -> None:
    """The zip's size fields claim fewer bytes than the entry holds: caught, not truncated."""
    real = b"A" * 4096
    claimed = real[:100]
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER, "data.bin": real},
        manifest_files=[file_entry("handler.py", HANDLER), file_entry("data.bin", claimed)],
    )
    patch_entry(archive, "data.bin", local_off=22, central_off=24, value=len(claimed))
    assert rejected(archive, trusted, out_dir) in {"BUNDLE_CORRUPT", "BUNDLE_FILE_HASH_MISMATCH"}


def test_unlisted_file(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER},
        extra=[Member("sneaky.py", b"import os\n")],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_FILE_UNLISTED"


def test_listed_but_missing(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER},
        manifest_files=[file_entry("handler.py", HANDLER), file_entry("gone.py", b"x")],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_FILE_MISSING"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("/etc/evil.py", "BUNDLE_PATH_ABSOLUTE"),
        ("C:/evil.py", "BUNDLE_PATH_ABSOLUTE"),
        ("../evil.py", "BUNDLE_PATH_TRAVERSAL"),
        ("lib/../../evil.py", "BUNDLE_PATH_TRAVERSAL"),
        ("lib\\..\\evil.py", "BUNDLE_PATH_INVALID"),
        ("lib//evil.py", "BUNDLE_PATH_INVALID"),
        ("./evil.py", "BUNDLE_PATH_INVALID"),
        ("evil\x01.py", "BUNDLE_PATH_INVALID"),
    ],
)
def test_hostile_names(tmp_path: Path, key, trusted, out_dir, name: str, reason: str) -> None:
    # Signed and listed, so only the name check can refuse it.
    archive = signed_zip(
        tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER}, extra=[Member(name, b"pwned = 1\n")]
    )
    assert rejected(archive, trusted, out_dir) == reason


def test_symlink_entry(tmp_path: Path, key, trusted, out_dir) -> None:
    link = zinfo("lib", stat.S_IFLNK | 0o777, zipfile.ZIP_STORED)
    archive = signed_zip(
        tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER}, extra=[Member(link, b"/etc")]
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_SYMLINK"


@pytest.mark.parametrize("kind", [stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK])
def test_device_and_special_files(tmp_path: Path, key, trusted, out_dir, kind: int) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER},
        extra=[Member(zinfo("dev", kind | 0o666), b"")],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_SPECIAL_FILE"


def test_duplicate_names(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER},
        extra=[Member("handler.py", b"import os\nos.system('id')\n")],
    )
    assert rejected(archive, trusted, out_dir) == "BUNDLE_DUPLICATE_ENTRY"


def test_too_many_files(tmp_path: Path, key, trusted, out_dir) -> None:
    files = {"handler.py": HANDLER, **{f"f{i}.txt": b"x" for i in range(10)}}
    archive = signed_zip(tmp_path / "b.zip", key, "python", "handler.main", files)
    assert rejected(archive, trusted, out_dir, BundleLimits(max_files=5)) == "BUNDLE_TOO_MANY_FILES"


def test_too_large_uncompressed(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER, "blob.bin": os.urandom(4096)}
    )
    assert rejected(archive, trusted, out_dir, BundleLimits(max_total_bytes=2048)) == "BUNDLE_TOO_LARGE"


def test_zip_bomb_compression_ratio(tmp_path: Path, key, trusted, out_dir) -> None:
    bomb = b"\0" * (32 * 1024 * 1024)
    archive = signed_zip(tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER, "zeros": bomb})
    assert archive.stat().st_size < 100_000
    assert rejected(archive, trusted, out_dir) == "BUNDLE_COMPRESSION_RATIO"


def test_encrypted_entry(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip",
        key,
        "python",
        "handler.main",
        {"handler.py": HANDLER},
        extra=[Member(zinfo("secret.py", compress=zipfile.ZIP_STORED), b"x")],
    )
    patch_entry(archive, "secret.py", local_off=6, central_off=8, value=0x1, fmt="<H")
    assert rejected(archive, trusted, out_dir) == "BUNDLE_ENCRYPTED"


@pytest.mark.parametrize(
    ("runtime", "entrypoint", "files", "reason"),
    [
        ("python", "handler", {"handler.py": HANDLER}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("python", "os.system", {"handler.py": HANDLER}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("python", "handler.main;rm", {"handler.py": HANDLER}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("node", "../index.handler", {"index.js": b"exports.handler=()=>1"}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("node", "index.handler", {"main.js": b"exports.handler=()=>1"}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("rust", "bootstrap", {"main": b"\x7fELF"}, "BUNDLE_ENTRYPOINT_INVALID"),
        ("rust", "bootstrap", {"bootstrap": b"\x7fELF"}, "BUNDLE_ENTRYPOINT_INVALID"),  # not executable
        ("java", "Main::handle", {"Main.class": b"\xca\xfe"}, "BUNDLE_RUNTIME_UNSUPPORTED"),
    ],
)
def test_bad_entrypoint_or_runtime(tmp_path: Path, key, trusted, out_dir, runtime, entrypoint, files, reason) -> None:
    archive = signed_zip(tmp_path / "b.zip", key, runtime, entrypoint, files)
    assert rejected(archive, trusted, out_dir) == reason


def test_not_a_zip_and_missing_manifest(tmp_path: Path, trusted, out_dir) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    assert rejected(junk, trusted, out_dir) == "BUNDLE_NOT_A_ZIP"
    bare = write_zip(tmp_path / "bare.zip", [Member("handler.py", HANDLER)])
    assert rejected(bare, trusted, out_dir) == "BUNDLE_MANIFEST_MISSING"


def test_archive_size_cap(tmp_path: Path, key, trusted, out_dir) -> None:
    archive = signed_zip(
        tmp_path / "b.zip", key, "python", "handler.main", {"handler.py": HANDLER, "r.bin": os.urandom(8192)}
    )
    assert rejected(archive, trusted, out_dir, BundleLimits(max_archive_bytes=4096)) == "BUNDLE_TOO_LARGE"


def test_cli_keygen_build_verify(tmp_path: Path) -> None:
    runner = CliRunner()
    keys = tmp_path / "keys"
    res = runner.invoke(bundle_group, ["keygen", "--out-dir", str(keys), "--name", "k"])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE((keys / "k.key").stat().st_mode) == 0o600
    src = tmp_path / "src"
    src.mkdir()
    (src / "index.mjs").write_text("export async function handler(e) { return { n: 1 }; }\n")
    out = tmp_path / "n.zip"
    args = ["build", str(src), "--key", str(keys / "k.key"), "-o", str(out), "--runtime", "node"]
    res = runner.invoke(bundle_group, [*args, "--entrypoint", "index.handler"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(bundle_group, ["verify", str(out), "--trusted", str(keys)])
    assert res.exit_code == 0 and "runtime node" in res.output, res.output
    res = runner.invoke(bundle_group, ["keygen", "--out-dir", str(tmp_path / "other")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(bundle_group, ["verify", str(out), "--trusted", str(tmp_path / "other")])
    assert res.exit_code != 0 and "BUNDLE_KEY_UNTRUSTED" in res.output, res.output
    res = runner.invoke(bundle_group, [*args, "--entrypoint", "missing.handler"])
    assert res.exit_code != 0 and "BUNDLE_ENTRYPOINT_INVALID" in res.output
