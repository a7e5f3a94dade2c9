"""How each bundle runtime is started. One contract for all of them: the invocation
event as JSON on stdin, the result as JSON on stdout, diagnostics on stderr.

- ``python``: entrypoint ``module.function``, run by the machine's Python in isolated
  mode (``-I``: no PYTHON* variables, no user site, no script directory on sys.path).
  A small platform shim imports the handler and calls ``handler(event)`` or
  ``handler(event, context)``; awaitables are awaited (asyncio is imported only then,
  which keeps the cold start close to the bare interpreter's).
- ``node``: entrypoint ``file.handler`` (``file`` + .js/.mjs/.cjs), the machine's
  Node.js; the handler may be async (AWS style).
- ``rust`` / ``custom``: the ``bootstrap`` executable at the bundle root (the AWS
  custom-runtime layout), run directly with stdin/stdout as above.

For Python and Node the shim keeps the real stdout for the result and sends anything the
user code prints to stderr, so a stray print cannot corrupt the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PYTHON_SHIM = r"""
import importlib, json, os, sys, types
root, entry = sys.argv[1], sys.argv[2]
out = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)
sys.stdout = sys.stderr
sys.path.insert(0, root)
event = json.load(sys.stdin)
module_name, func_name = entry.rsplit(".", 1)
handler = getattr(importlib.import_module(module_name), func_name)
context = types.SimpleNamespace(**{k: event.get(k) for k in ("task_id", "attempt", "lease_token", "deadline_unix")})
func = getattr(handler, "__func__", handler)
code = getattr(func, "__code__", None)
arity = code.co_argcount - (func is not handler) if code is not None else 1
result = handler(event, context) if arity >= 2 else handler(event)
if hasattr(result, "__await__"):
    import asyncio
    async def _await(value):
        return await value
    result = asyncio.run(_await(result))
json.dump(result, out)
out.flush()
"""

NODE_SHIM = r"""
const fs = require("fs"), path = require("path"), { pathToFileURL } = require("url");
const [root, entry] = process.argv.slice(1);
const realWrite = process.stdout.write.bind(process.stdout);
process.stdout.write = process.stderr.write.bind(process.stderr);
console.log = console.info = console.debug = console.error;
const chunks = [];
process.stdin.on("data", (c) => chunks.push(c));
process.stdin.on("end", async () => {
  try {
    const event = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    const dot = entry.lastIndexOf(".");
    const base = entry.slice(0, dot), name = entry.slice(dot + 1);
    const file = [".js", ".mjs", ".cjs"].map((e) => path.join(root, base + e)).find((p) => fs.existsSync(p));
    if (!file) throw new Error("entrypoint file not found");
    const mod = await import(pathToFileURL(file).href);
    const handler = mod[name] ?? (mod.default ? mod.default[name] : undefined);
    if (typeof handler !== "function") throw new Error("handler is not a function: " + name);
    const context = { task_id: event.task_id, attempt: event.attempt, deadline_unix: event.deadline_unix };
    const result = await handler(event, context);
    realWrite(JSON.stringify(result === undefined ? null : result), () => process.exit(0));
  } catch (err) {
    process.stderr.write(String((err && err.stack) || err) + "\n");
    process.exit(1);
  }
});
"""


@dataclass(frozen=True)
class Executables:
    python: str = "/usr/bin/python3"
    node: str = "node"


def runtime_argv(runtime: str, entrypoint: str, bundle_root: Path, exes: Executables) -> list[str]:
    """The command that runs a verified bundle (``entrypoint`` was checked at extraction)."""
    if runtime == "python":
        return [exes.python, "-I", "-B", "-c", PYTHON_SHIM, str(bundle_root), entrypoint]
    if runtime == "node":
        return [exes.node, "-e", NODE_SHIM, str(bundle_root), entrypoint]
    if runtime in ("rust", "custom"):
        return [str(bundle_root / "bootstrap")]
    raise ValueError(f"unsupported runtime {runtime!r}")


def bare_argv(runtime: str, exes: Executables) -> list[str]:
    """The same interpreter doing nothing: the baseline of the cold-start benchmark."""
    if runtime == "python":
        return [exes.python, "-I", "-B", "-c", "pass"]
    if runtime == "node":
        return [exes.node, "-e", "0"]
    return ["/bin/true"]
