"""The Lite invoker: fetch a signed bundle (file://, or s3:// from the bundle store), verify and extract it into a fresh
private run directory, and run it in the sandbox (see ``sandbox`` and ``mountns``).

Per invocation::

    <runs_dir>/udf-XXXX/          0700 (owned by the sandbox uid when running as root)
        bundle-XXXX/              the verified bundle, read-only
        home/                     HOME, writable (besides the sandbox's private tmpfs)
        etc/                      this run's /etc: passwd, group, the loader's cache
        task.sock                 the bridge to the task endpoint

Only the bundle, home and the socket are bound into the sandbox, at the same paths, and
etc/ as its /etc; as root the run is in its own memory cgroup (``cgroups``: one limit
for all its processes). The UDF's environment is exactly PATH, HOME, LANG,
TRACE_TASK_CAPABILITY and TRACE_TASK_ENDPOINT. Everything is removed afterwards.
Without a sandbox nothing runs (``SANDBOX_UNAVAILABLE``) unless the development setting
``allow_unsandboxed`` says otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from trace_platform.adapters.invoker import base, cgroups
from trace_platform.adapters.invoker.base import Invocation, InvocationResult
from trace_platform.adapters.invoker.bridge import TaskEndpointBridge
from trace_platform.adapters.invoker.mountns import RunMounts, write_etc
from trace_platform.adapters.invoker.runtimes import Executables, runtime_argv
from trace_platform.adapters.invoker.sandbox import (
    ProcessOutcome,
    SandboxPlan,
    UidPool,
    kill_uid,
    probe,
    run_bounded,
    wrapper_argv,
)
from trace_platform.core.bundle_manifest import BundleRejected, TrustedKeys
from trace_platform.core.bundles import BundleLimits, extract_bundle, remove_tree
from trace_platform.core.config import InvokerSettings
from trace_platform.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from trace_platform.core.storage_paths import is_under

log = logging.getLogger(__name__)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
CAPABILITY_ENV = "TRACE_TASK_CAPABILITY"
ENDPOINT_ENV = "TRACE_TASK_ENDPOINT"


def fetch_file_bundle(url: str, roots: tuple[Path, ...], dest: Path, max_bytes: int, sha256: str) -> Path:
    """Copy a file:// bundle that lies under one of ``roots`` into ``dest`` (bounded),
    checking the pinned digest when one is given. The copy is what gets verified, so
    the source changing afterwards cannot matter."""
    parsed = urlparse(url)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise InvalidArgument("BUNDLE_URL_UNSUPPORTED", "the Lite invoker fetches file:// bundle URLs only")
    source = Path(unquote(parsed.path)).resolve()
    if not any(source.is_relative_to(root.resolve()) for root in roots):
        raise PermissionDenied("BUNDLE_URL_FORBIDDEN", "bundle URL is outside the configured bundle roots")
    digest = hashlib.sha256()
    copied = 0
    try:
        with source.open("rb") as src, dest.open("xb") as out:
            while chunk := src.read(65536):
                copied += len(chunk)
                if copied > max_bytes:
                    raise BundleRejected("BUNDLE_TOO_LARGE", "bundle archive exceeds the size cap")
                digest.update(chunk)
                out.write(chunk)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise BundleRejected("BUNDLE_NOT_FOUND", "bundle archive not found") from None
    if sha256 and digest.hexdigest() != sha256.lower():
        raise BundleRejected("BUNDLE_DIGEST_MISMATCH", "bundle archive does not match its pinned sha256")
    return dest


class BundleSource(Protocol):
    """Reads a published bundle object (the bundle store's ``fetch``): bounded, into ``dest``."""

    def fetch(self, uri: str, dest: Path, max_bytes: int) -> int: ...


@dataclass(frozen=True)
class RemoteBundles:
    """The cluster profile's bundle store on S3: ``s3://`` bundle URLs under ``prefix``
    are read through ``source`` (an invoker in its own process shares no directory with
    the BundleService that published them)."""

    prefix: str
    source: BundleSource


def fetch_remote_bundle(url: str, remote: RemoteBundles, dest: Path, max_bytes: int, sha256: str) -> Path:
    """Copy an ``s3://`` bundle under the store's prefix into ``dest`` (bounded), checking
    the pinned digest when one is given: the copy is what gets verified."""
    if not is_under(url, remote.prefix) or url.endswith("/"):
        raise PermissionDenied("BUNDLE_URL_FORBIDDEN", "bundle URL is outside the bundle store")
    try:
        remote.source.fetch(url, dest, max_bytes)
    except NotFound:
        raise BundleRejected("BUNDLE_NOT_FOUND", "bundle archive not found") from None
    except ResourceExhausted:
        raise BundleRejected("BUNDLE_TOO_LARGE", "bundle archive exceeds the size cap") from None
    digest = hashlib.sha256()
    with dest.open("rb") as fh:
        while chunk := fh.read(65536):
            digest.update(chunk)
    if sha256 and digest.hexdigest() != sha256.lower():
        raise BundleRejected("BUNDLE_DIGEST_MISMATCH", "bundle archive does not match its pinned sha256")
    return dest


def fetch_bundle(
    url: str, roots: tuple[Path, ...], remote: RemoteBundles | None, dest: Path, max_bytes: int, sha256: str
) -> Path:
    if remote is not None and urlparse(url).scheme == "s3":
        return fetch_remote_bundle(url, remote, dest, max_bytes, sha256)
    return fetch_file_bundle(url, roots, dest, max_bytes, sha256)


def classify(outcome: ProcessOutcome, runtime: str) -> InvocationResult:
    stderr = outcome.stderr_tail.decode("utf-8", "replace")
    reason = base.UDF_OK
    result = ""
    if outcome.timed_out:
        reason = base.UDF_TIMEOUT
    elif outcome.stdout_overflow:
        reason = base.UDF_RESULT_TOO_LARGE
    elif outcome.returncode < 0:
        reason = base.UDF_KILLED
    elif outcome.returncode > 0:
        reason = base.UDF_EXIT_NONZERO
    else:
        try:
            result = outcome.stdout.decode("utf-8")
            json.loads(result)
        except (UnicodeDecodeError, ValueError):
            reason, result = base.UDF_RESULT_INVALID, ""
    return InvocationResult(
        exit_code=outcome.returncode,
        result_json=result,
        stderr_tail=stderr,
        timed_out=outcome.timed_out,
        error_reason=reason,
        runtime=runtime,
        duration_seconds=outcome.duration_seconds,
    )


class LocalInvoker:
    def __init__(
        self,
        settings: InvokerSettings,
        trusted: TrustedKeys,
        *,
        bundle_roots: tuple[Path, ...],
        runs_dir: Path | None = None,
        plan: SandboxPlan | None = None,
        bundle_limits: BundleLimits | None = None,
        task_tls: ssl.SSLContext | None = None,
        remote_bundles: RemoteBundles | None = None,
    ) -> None:
        self.settings = settings
        self._remote = remote_bundles
        self._task_tls = task_tls  # how the bridge dials a TLS task endpoint (None: plaintext)
        self.plan = plan or probe(settings.bwrap, (settings.python, settings.node), SANDBOX_PATH)
        self.limits = settings.limits
        self._trusted = trusted
        self._roots = bundle_roots
        self._runs_dir = runs_dir or Path(tempfile.gettempdir())
        self._bundle_limits = bundle_limits or BundleLimits()
        self._exes = Executables(python=settings.python, node=settings.node)
        self._uids = UidPool(settings.sandbox_uid_base, settings.sandbox_uid_count)
        # One memory limit for the whole run, not per process (cgroups); rlimits only where
        # this machine cannot make cgroups (then said in the log line below).
        found = cgroups.available() if self.plan.isolated else "no sandbox"
        self._cgroups = found if isinstance(found, cgroups.MemoryCgroups) else None
        memory = "per-run memory cgroup" if self._cgroups else f"no per-run memory cgroup ({found})"
        if self.plan.isolated:
            log.info("lite invoker sandbox", extra={"sandbox": f"{self.plan.describe()}, {memory}"})
        elif settings.allow_unsandboxed:
            log.warning("lite invoker runs UDFs UNSANDBOXED", extra={"sandbox": self.plan.describe()})
        else:
            log.error("lite invoker refuses to run UDFs", extra={"sandbox": self.plan.describe()})

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        if not self.plan.isolated and not self.settings.allow_unsandboxed:
            raise Unavailable(
                "SANDBOX_UNAVAILABLE", f"refusing to run a bundle without a sandbox: {self.plan.unavailable}"
            )
        lease_left = (invocation.lease_expires_at - datetime.now(UTC)).total_seconds()
        if lease_left <= 0:
            raise FailedPrecondition("LEASE_EXPIRED", "the attempt's lease has already expired")
        timeout = min(self.limits.timeout_seconds, lease_left)
        self._runs_dir.mkdir(parents=True, exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="udf-", dir=self._runs_dir))
        uid = self._uids.acquire() if self.plan.switch_uid else None
        bridge: TaskEndpointBridge | None = None
        cgroup: cgroups.RunCgroup | None = None
        try:
            if self._cgroups is not None:
                cgroup = await asyncio.to_thread(self._cgroups.create, run_dir.name, self.limits.memory_bytes)
            archive = await asyncio.to_thread(
                fetch_bundle,
                invocation.bundle_url,
                self._roots,
                self._remote,
                run_dir / "bundle.zip",
                self._bundle_limits.max_archive_bytes,
                invocation.bundle_sha256,
            )
            extracted = await asyncio.to_thread(
                extract_bundle, archive, self._trusted, self._bundle_limits, run_dir, 0o555
            )
            archive.unlink()
            home = run_dir / "home"
            home.mkdir(mode=0o700)
            if uid is not None:
                os.chown(home, uid, uid)
                os.chown(run_dir, uid, uid)
            env = {"PATH": SANDBOX_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
            env[CAPABILITY_ENV] = invocation.capability_token
            if self.settings.task_endpoint:
                if self.plan.isolated:
                    bridge = TaskEndpointBridge(run_dir / "task.sock", self.settings.task_endpoint, uid, self._task_tls)
                    await bridge.start()
                    env[ENDPOINT_ENV] = bridge.target
                else:
                    env[ENDPOINT_ENV] = self.settings.task_endpoint
            mounts = None
            if self.plan.isolated:
                write_etc(run_dir / "etc", os.getuid() if uid is None else uid, home)
                socket = bridge.socket_path if bridge is not None else None
                mounts = RunMounts(extracted.root, home, run_dir / "etc", socket)
            m = extracted.manifest
            join = cgroup.join_argv() if cgroup is not None else []
            argv = (
                join
                + wrapper_argv(self.plan, self.limits, uid, mounts)
                + runtime_argv(m.runtime, m.entrypoint, extracted.root, self._exes)
            )
            stdin = json.dumps(invocation.event(time.time() + timeout)).encode()
            outcome = await run_bounded(argv, stdin, env, extracted.root, self.limits, timeout)
            return classify(outcome, m.runtime)
        finally:
            if bridge is not None:
                await bridge.close()
            if uid is not None:
                await kill_uid(self.plan.setpriv, uid)
                self._uids.release(uid)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            await asyncio.to_thread(remove_tree, run_dir)

    async def close(self) -> None:
        return None
