"""Child process that runs one ``cryo.freeze`` and reports its summary as JSON.

Run as ``python -m trace_platform.adapters.extract.cryo_child``. The request (with
the RPC URL, which may hold a provider key) arrives on stdin, never in argv, so it
does not show in process listings. The child leaves with ``os._exit``: the Rust
runtime inside ``cryo`` can crash the interpreter during normal finalization
(seen here as SIGSEGV/SIGABRT after a successful run), and a separate process keeps
that, and any hang, away from the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any


def _run(request: dict[str, Any]) -> dict[str, Any]:
    try:
        import cryo
    except ImportError as exc:  # said as such: not an RPC failure, and no retry will help
        return {"ok": False, "missing": True, "error": f"{type(exc).__name__}: {exc}"[:2000]}

    summary = asyncio.run(cryo.async_freeze(request["datatypes"], **request["kwargs"]))
    if not isinstance(summary, dict):
        return {"ok": False, "error": "cryo returned no summary"}
    return {"ok": True, "summary": {k: int(v) for k, v in summary.items() if isinstance(v, int)}}


def main() -> None:
    # Whatever Cryo prints goes to stderr; the one JSON result line owns the real stdout.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        result = _run(json.loads(sys.stdin.read()))
    except BaseException as exc:  # report anything; the parent decides
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    sys.stdout.flush()
    os.write(result_fd, json.dumps(result).encode())
    os._exit(0)


if __name__ == "__main__":
    main()
