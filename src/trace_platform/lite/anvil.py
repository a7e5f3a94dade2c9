"""A local anvil node for the Lite demo: the npm package's binary, started directly and
stopped by its PID, plus just enough JSON-RPC to make blocks with transactions and logs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trace_platform.adapters.rpc.jsonrpc import RpcError, json_rpc

ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
# A contract whose every call emits one LOG1 with a fixed topic (raw EVM bytecode).
EMITTER_TOPIC = "0x" + "5e" * 32
_RUNTIME = "7f" + EMITTER_TOPIC[2:] + "6000" + "6000" + "a1" + "00"  # PUSH32 topic; PUSH1 0; PUSH1 0; LOG1; STOP
_INIT = f"60{len(_RUNTIME) // 2:02x}600c60003960{len(_RUNTIME) // 2:02x}6000f3"  # CODECOPY runtime; RETURN it
EMITTER_INITCODE = "0x" + _INIT + _RUNTIME


def find_anvil() -> Path:
    """TRACE_ANVIL_BIN, ./node_modules (npm ci), the source checkout's node_modules, or PATH."""
    candidates = [os.environ.get("TRACE_ANVIL_BIN", ""), str(Path.cwd() / ANVIL_RELATIVE)]
    candidates.append(str(Path(__file__).resolve().parents[3] / ANVIL_RELATIVE))
    candidates.append(shutil.which("anvil") or "")
    for c in candidates:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return Path(c)
    raise FileNotFoundError("anvil not found: run `npm ci` in the checkout or set TRACE_ANVIL_BIN")


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
    def start(*extra: str, binary: Path | None = None, timeout: float = 15.0) -> AnvilNode:
        port = free_port()
        proc = subprocess.Popen(
            [str(binary or find_anvil()), "--port", str(port), "--silent", "--prune-history", *extra],
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
