"""A minimal blocking JSON-RPC call; callers run it in a thread. URLs may carry keys,
so neither the URL nor the node's reply text goes into errors."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


class RpcError(Exception):
    pass


def json_rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read(8 << 20))
    except (OSError, ValueError):
        raise RpcError(f"{method} failed: node unreachable or reply malformed") from None
    if not isinstance(doc, dict) or "result" not in doc:
        raise RpcError(f"{method} failed: node returned an error")
    return doc["result"]


def json_rpc_batch(url: str, calls: list[tuple[str, list[Any]]], timeout: float = 30.0) -> list[Any]:
    """One JSON-RPC batch; results in the order of ``calls``. Any missing or failed entry
    fails the whole batch (the caller retries or reports), again without URL or node text."""
    body = json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    ).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            doc = json.loads(resp.read(256 << 20))
    except (OSError, ValueError):
        raise RpcError("batch failed: node unreachable or reply malformed") from None
    if not isinstance(doc, list):
        raise RpcError("batch failed: node returned an error")
    by_id = {e.get("id"): e for e in doc if isinstance(e, dict)}
    results = []
    for i in range(len(calls)):
        entry = by_id.get(i)
        if entry is None or "result" not in entry:
            raise RpcError(f"{calls[i][0]} failed: node returned an error")
        results.append(entry["result"])
    return results
