"""find_anvil: the one resolver the demo, tests and benchmarks use, on any platform."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from trace_platform.lite import anvil


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no node_modules, no checkout fallback, empty PATH."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRACE_ANVIL_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(anvil, "__file__", str(tmp_path / "a" / "b" / "c" / "anvil.py"))
    return tmp_path


def test_setting_wins_and_a_bad_setting_is_named(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = _exe(bare / "tools" / "my-anvil")
    _exe(bare / "node_modules" / ".bin" / "anvil")
    monkeypatch.setenv("TRACE_ANVIL_BIN", str(binary))
    assert anvil.find_anvil() == binary
    monkeypatch.setenv("TRACE_ANVIL_BIN", str(bare / "missing"))
    with pytest.raises(FileNotFoundError, match="TRACE_ANVIL_BIN"):
        anvil.find_anvil()


@pytest.mark.parametrize(
    ("plat", "machine", "package"),
    [
        ("darwin", "arm64", "anvil-darwin-arm64"),
        ("linux", "aarch64", "anvil-linux-arm64"),
        ("linux", "x86_64", "anvil-linux-amd64"),
    ],
)
def test_npm_platform_package_of_this_platform(
    bare: Path, monkeypatch: pytest.MonkeyPatch, plat: str, machine: str, package: str
) -> None:
    for other in ("anvil-linux-amd64", "anvil-darwin-arm64", "anvil-linux-arm64"):
        if other != package:
            _exe(bare / "node_modules" / "@foundry-rs" / other / "bin" / "anvil")
    wanted = _exe(bare / "node_modules" / "@foundry-rs" / package / "bin" / "anvil")
    monkeypatch.setattr(sys, "platform", plat)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert anvil.find_anvil() == wanted


def test_npm_launcher_then_path(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A platform the npm package has no binary package for here: its launcher is used.
    launcher = _exe(bare / "node_modules" / ".bin" / "anvil")
    assert anvil.find_anvil() == launcher
    launcher.unlink()
    on_path = _exe(bare / "bin" / "anvil")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert anvil.find_anvil() == on_path
    on_path.unlink()
    with pytest.raises(FileNotFoundError, match="npm ci"):
        anvil.find_anvil()


def test_checkout_resolves_to_a_runnable_anvil() -> None:
    found = anvil.find_anvil()
    assert os.access(found, os.X_OK)
    node = anvil.AnvilNode.start(binary=found)
    try:
        assert node.block_number() == 0
    finally:
        node.stop()
