"""`trace status`: the RPC pool endpoints below the jobs (index and host, never a URL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trace_platform.gen.trace.v1.chain_sync_pb2 import RpcEndpointStatus


def render_endpoints(endpoints: Sequence[RpcEndpointStatus]) -> str:
    """Lines to append to the status text; empty when no pool is proxied."""
    if not endpoints:
        return ""
    lines = ["", "rpc endpoints"]
    for e in endpoints:
        head = f"head {e.head_block}" if e.HasField("head_block") else "head -"
        rps = f"{e.requests_per_second:g}/s" if e.HasField("requests_per_second") else "-"
        conc = str(e.max_concurrent_requests) if e.HasField("max_concurrent_requests") else "-"
        lines.append(
            f"  {e.rpc_pool} #{e.index} {e.host:<24} {e.state:<9} {head:<14} requests {e.requests:>7}  "
            f"errors {e.errors:>5}  throttles {e.throttles:>5}  limits {rps} x{conc}"
        )
    return "\n".join(lines)
