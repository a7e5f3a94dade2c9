"""A local anvil node for the Lite demo: the npm package's binary, started directly and
stopped by its PID, plus just enough JSON-RPC to make blocks with transactions and logs."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_platform.adapters.rpc.jsonrpc import RpcError, json_rpc

# A contract whose every call emits one LOG1 with a fixed topic (raw EVM bytecode).
EMITTER_TOPIC = "0x" + "5e" * 32
_RUNTIME = "7f" + EMITTER_TOPIC[2:] + "6000" + "6000" + "a1" + "00"  # PUSH32 topic; PUSH1 0; PUSH1 0; LOG1; STOP
_INIT = f"60{len(_RUNTIME) // 2:02x}600c60003960{len(_RUNTIME) // 2:02x}6000f3"  # CODECOPY runtime; RETURN it
EMITTER_INITCODE = "0x" + _INIT + _RUNTIME


# The npm package's per-platform binaries, named as its launcher (bin.mjs/const.mjs) names them.
_NPM_PLATFORMS = {"linux": "linux", "darwin": "darwin", "win32": "win32"}
_NPM_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _npm_binary(node_modules: Path) -> list[Path]:
    """What ``@foundry-rs/anvil``'s launcher would run, without going through node: the
    platform package's binary, else the package's ``dist/`` fallback; then the launcher
    itself (``.bin/anvil``, a node script that forwards signals to the same binary)."""
    exe = "anvil.exe" if sys.platform == "win32" else "anvil"
    found: list[Path] = []
    plat, arch = _NPM_PLATFORMS.get(sys.platform), _NPM_ARCHES.get(platform.machine().lower())
    if plat and arch:
        found.append(node_modules / "@foundry-rs" / f"anvil-{plat}-{arch}" / "bin" / exe)
    found.append(node_modules / "@foundry-rs" / "dist" / exe)
    found.append(node_modules / ".bin" / ("anvil.cmd" if sys.platform == "win32" else "anvil"))
    return found


def find_anvil() -> Path:
    """The one anvil resolver (demo, tests, benchmarks): ``TRACE_ANVIL_BIN`` if set (and then
    only it), else the npm package under ./node_modules or the source checkout's, else PATH."""
    configured = os.environ.get("TRACE_ANVIL_BIN", "")
    if configured:
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise FileNotFoundError(f"TRACE_ANVIL_BIN={configured} is not an executable file")
    candidates = [
        *_npm_binary(Path.cwd() / "node_modules"),
        *_npm_binary(Path(__file__).resolve().parents[3] / "node_modules"),
    ]
    on_path = shutil.which("anvil")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError(
        "anvil not found: run `npm ci` in the checkout (the @foundry-rs/anvil package), "
        "put anvil on PATH, or set TRACE_ANVIL_BIN"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AnvilNode:
    port: int
    proc: subprocess.Popen[bytes]
    accounts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def start(*extra: str, binary: Path | None = None, timeout: float = 15.0, prune_history: bool = True) -> AnvilNode:
        """``prune_history=False`` keeps every state (``anvil_reorg`` needs the fork point's)."""
        port = free_port()
        prune = ["--prune-history"] if prune_history else []
        proc = subprocess.Popen(
            [str(binary or find_anvil()), "--port", str(port), "--silent", *prune, *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = AnvilNode(port, proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                node.accounts = list(node.rpc("eth_accounts"))
                return node
            except RpcError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    node.stop()
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        return json_rpc(self.url, method, list(params), timeout)

    def send(self, **tx: str) -> dict[str, Any]:
        """Send a transaction from the first unlocked account; return its receipt (automine)."""
        tx_hash = self.rpc("eth_sendTransaction", {"from": self.accounts[0], **tx})
        deadline = time.monotonic() + 10
        while (receipt := self.rpc("eth_getTransactionReceipt", tx_hash)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("transaction was not mined")
            time.sleep(0.02)
        if receipt["status"] != "0x1":
            raise RuntimeError("transaction reverted")
        return dict(receipt)

    def deploy_log_emitter(self) -> str:
        address: str = self.send(data=EMITTER_INITCODE, gas=hex(200_000))["contractAddress"]
        return address

    def mine(self, blocks: int) -> None:
        if blocks > 0:
            self.rpc("anvil_mine", hex(blocks), timeout=300.0)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)
