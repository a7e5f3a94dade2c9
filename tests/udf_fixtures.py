"""Real bundles for the invoker tests: Python, Node and a Rust crate compiled by cargo."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.bundle_helpers import signed_zip
from trace_platform.adapters.invoker.base import Invocation
from trace_platform.adapters.invoker.local import LocalInvoker
from trace_platform.core.bundle_manifest import TrustedKeys
from trace_platform.core.config import InvokerSettings, UdfLimits

NODE_CJS = b"""
exports.handler = async (event, context) => {
  console.log("stray console.log goes to stderr");
  return { runtime: "node", task_id: context.task_id, sum: event.inputs.values.reduce((a, b) => a + b, 0) };
};
"""

CARGO_TOML = b"""[package]
name = "bootstrap"
version = "0.1.0"
edition = "2021"

[dependencies]

[profile.release]
opt-level = "s"
"""

# Reads the invocation JSON from stdin, writes a JSON result with std only.
RUST_MAIN = rb"""
use std::io::{Read, Write};

fn string_field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{}\":", key);
    let start = json.find(&pat)? + pat.len();
    let rest = json[start..].trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let task_id = string_field(&input, "task_id").unwrap_or_default();
    let out = format!(
        "{{\"runtime\":\"rust\",\"task_id\":\"{}\",\"input_bytes\":{},\"env_keys\":{}}}",
        task_id,
        input.len(),
        std::env::vars().count()
    );
    std::io::stdout().write_all(out.as_bytes()).expect("stdout");
}
"""


def find_cargo() -> str | None:
    """cargo on PATH, else rustup's default place (often not on a non-login shell's PATH)."""
    rustup = Path.home() / ".cargo" / "bin" / "cargo"
    return shutil.which("cargo") or (str(rustup) if os.access(rustup, os.X_OK) else None)


def build_rust_bootstrap(workdir: Path, source: bytes = RUST_MAIN) -> Path:
    """``cargo build --release --offline`` of a dependency-free crate; returns the binary.

    Without cargo the calling test is skipped, saying so (never an error): .ci/run installs
    it, a developer machine may not have it."""
    cargo = find_cargo()
    if cargo is None:
        pytest.skip("cargo not found on PATH or in ~/.cargo/bin: the Rust bundle tests need it (rustup or `cargo`)")
    crate = workdir / "crate"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_bytes(CARGO_TOML)
    (crate / "src" / "main.rs").write_bytes(source)
    subprocess.run(
        [cargo, "build", "--release", "--offline", "--quiet"],
        cwd=crate,
        check=True,
        timeout=300,
        env={**os.environ, "CARGO_TARGET_DIR": str(workdir / "target")},
    )
    return workdir / "target" / "release" / "bootstrap"


def shared_tmp_dir(prefix: str) -> Path:
    """A directory a per-invocation sandbox uid can traverse (pytest's tmp is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


@dataclass
class UdfLab:
    key: Ed25519PrivateKey
    bundles: Path
    runs: Path
    created: list[Path] = field(default_factory=list)

    @property
    def trusted(self) -> TrustedKeys:
        return TrustedKeys.of(self.key.public_key())

    def bundle(self, runtime: str, entrypoint: str, files: dict[str, bytes], executables: tuple[str, ...] = ()) -> str:
        path = self.bundles / f"{uuid.uuid4().hex[:10]}.zip"
        signed_zip(path, self.key, runtime, entrypoint, files, executables=executables)
        return f"file://{path}"

    def python(self, code: str) -> str:
        return self.bundle("python", "handler.main", {"handler.py": code.encode()})

    def invoker(self, **overrides: object) -> LocalInvoker:
        """Overrides name InvokerSettings or UdfLimits fields; the timeout defaults to 20 s."""
        names = set(UdfLimits.__dataclass_fields__)
        limit_overrides = {k: v for k, v in overrides.items() if k in names}
        limits = UdfLimits(**{"timeout_seconds": 20.0, **limit_overrides})  # type: ignore[arg-type]
        rest = {k: v for k, v in overrides.items() if k not in names}
        settings = InvokerSettings(limits=limits, **rest)  # type: ignore[arg-type]
        return LocalInvoker(settings, self.trusted, bundle_roots=(self.bundles,), runs_dir=self.runs)


def invocation(bundle_url: str, **changes: object) -> Invocation:
    base: dict[str, object] = {
        "task_id": str(uuid.uuid4()),
        "attempt": 1,
        "lease_token": str(uuid.uuid4()),
        "lease_expires_at": datetime.now(UTC) + timedelta(seconds=60),
        "capability_token": "cap-" + uuid.uuid4().hex,
        "bundle_url": bundle_url,
        "config": {},
        "inputs": {},
    }
    base.update(changes)
    return Invocation(**base)  # type: ignore[arg-type]


Factory = Callable[..., LocalInvoker]
