"""A real anvil node for tests: started as its own binary, stopped by its PID.

``AnvilNode.start()`` picks a free port, runs ``anvil --silent --prune-history`` and
waits for JSON-RPC. ``deploy_log_emitter`` deploys a 39-byte contract (raw bytecode,
no compiler) that emits one ``LOG1`` with ``EMITTER_TOPIC`` on every call.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ANVIL_BIN = ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"

EMITTER_TOPIC = "0x" + "5e" * 32
_RUNTIME = "7f" + EMITTER_TOPIC[2:] + "6000" + "6000" + "a1" + "00"  # PUSH32 topic; PUSH1 0; PUSH1 0; LOG1; STOP
_INIT = f"60{len(_RUNTIME) // 2:02x}600c60003960{len(_RUNTIME) // 2:02x}6000f3"  # CODECOPY runtime; RETURN it
EMITTER_INITCODE = "0x" + _INIT + _RUNTIME


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AnvilNode:
    port: int
    proc: subprocess.Popen[bytes]
    accounts: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def start(*extra: str, timeout: float = 15.0) -> AnvilNode:
        if not ANVIL_BIN.exists():
            raise RuntimeError(f"anvil not installed at {ANVIL_BIN} (run npm ci)")
        port = free_port()
        proc = subprocess.Popen(
            [str(ANVIL_BIN), "--port", str(port), "--silent", "--prune-history", *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node = AnvilNode(port, proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                node.accounts = node.rpc("eth_accounts")
                return node
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    node.stop()
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, 9)
                self.proc.wait()

    def rpc(self, method: str, *params: Any, timeout: float = 10.0) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

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
        receipt = self.send(data=EMITTER_INITCODE, gas=hex(200_000))
        address: str = receipt["contractAddress"]
        return address

    def mine(self, blocks: int) -> None:
        self.rpc("anvil_mine", hex(blocks), timeout=120.0)

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)
