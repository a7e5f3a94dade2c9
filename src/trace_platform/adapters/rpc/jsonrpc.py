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
