"""Run Cryo for one dataset over one end-exclusive block range, staged privately.

``CryoRunner.run`` stages output in ``<staging_root>/<task_id>/<attempt>/`` (mode
0700, removed first if a redelivered attempt left one), runs ``cryo.freeze`` (in a
child process, see ``cryo_child``), and checks what came out: Cryo
reports failed chunks in ``n_errored`` instead of raising, so any errored chunk is
a failed attempt; every file must be a Parquet file of the requested dataset whose
``{start}_to_{end}`` name (Cryo's, end inclusive) lies in the range, the files
together must tile the range, and the artifact caps hold. On any failure the
staging directory is removed before the error is raised. On success the caller
uploads ``StagedOutput.files`` and calls ``cleanup()``.

Errors are ``Unavailable`` (retryable: RPC or Cryo failed, timed out) or
``FailedPrecondition`` (the output broke a rule); ``metadata["category"]`` is
``rpc``, ``cryo`` or ``output``. Messages never carry the RPC URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from trace_platform.core.errors import FailedPrecondition, TraceError, Unavailable
from trace_platform.core.manifest import ManifestObject
from trace_platform.core.planner import BlockRange

CRYO_FAILED = "CRYO_FAILED"
CRYO_CHUNKS_ERRORED = "CRYO_CHUNKS_ERRORED"
CRYO_TIMEOUT = "CRYO_TIMEOUT"
CRYO_NOT_INSTALLED = "CRYO_NOT_INSTALLED"
UNEXPECTED_OUTPUT = "CRYO_UNEXPECTED_OUTPUT"
ARTIFACT_CAP_EXCEEDED = "ARTIFACT_CAP_EXCEEDED"
CHAIN_ID_MISMATCH = "CHAIN_ID_MISMATCH"

_DATASET_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FILE_RE = re.compile(r"^(?P<net>[A-Za-z0-9_-]+)__(?P<ds>[a-z0-9_]+)__(?P<s>\d{8,})_to_(?P<e>\d{8,})\.parquet$")
_ATTEMPT_RE = re.compile(r"^[1-9]\d{0,8}$")


@dataclass(frozen=True)
class ArtifactCaps:
    max_files: int = 256
    max_file_bytes: int = 512 * 1024 * 1024
    max_total_bytes: int = 2 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class CryoRequest:
    task_id: str
    attempt: int
    cryo_dataset_name: str
    block_range: BlockRange
    rpc_url: str = field(repr=False)
    chain_id: int | None = None  # when set, every row's chain_id must equal it
    max_retries: int = 3
    initial_backoff_ms: int = 250
    max_concurrent_requests: int | None = None
    requests_per_second: int | None = None
    # Further datasets of the same range in the same Cryo call (blocks and transactions
    # then share one fetch of every block).
    more_datasets: tuple[str, ...] = ()

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.cryo_dataset_name, *self.more_datasets)


@dataclass(frozen=True)
class StagedFile:
    path: Path
    block_range: BlockRange  # end-exclusive, from Cryo's inclusive file name
    object: ManifestObject  # key = the file name
    dataset: str = ""

    @staticmethod
    def of(files: tuple[StagedFile, ...], dataset: str) -> list[StagedFile]:
        return [f for f in files if f.dataset == dataset]


@dataclass(frozen=True)
class StagedOutput:
    directory: Path
    files: tuple[StagedFile, ...]
    summary: dict[str, int]
    cryo_seconds: float

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        _remove_if_empty(self.directory.parent)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or check an existing one is a real directory we own."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(path)
    if not os.path.isdir(path) or os.path.islink(path) or st.st_uid != os.geteuid():
        raise FailedPrecondition("STAGING_UNSAFE", "staging directory is not a private directory we own")
    os.chmod(path, 0o700)
    return path


def remove_stale_staging(root: Path, max_age_seconds: float, now: float | None = None) -> list[Path]:
    """Remove ``<root>/<task uuid>/<attempt>/`` directories older than ``max_age_seconds``.

    Only entries named like staging directories are touched, so a root pointed at a
    shared directory by mistake loses nothing else. Returns what was removed.
    """
    now = time.time() if now is None else now
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for task_dir in root.iterdir():
        if task_dir.is_symlink() or not task_dir.is_dir() or not _is_uuid(task_dir.name):
            continue
        for attempt_dir in task_dir.iterdir():
            if attempt_dir.is_symlink() or not attempt_dir.is_dir() or not _ATTEMPT_RE.fullmatch(attempt_dir.name):
                continue
            if now - attempt_dir.lstat().st_mtime >= max_age_seconds:
                shutil.rmtree(attempt_dir, ignore_errors=True)
                removed.append(attempt_dir)
        _remove_if_empty(task_dir)
    return removed


class CryoRunner:
    def __init__(
        self,
        staging_root: Path,
        *,
        timeout_seconds: float = 600.0,
        caps: ArtifactCaps | None = None,
    ) -> None:
        self.staging_root = staging_root
        self.timeout_seconds = timeout_seconds
        self.caps = caps or ArtifactCaps()

    def staging_dir(self, task_id: str, attempt: int) -> Path:
        if not _is_uuid(task_id) or not _ATTEMPT_RE.fullmatch(str(attempt)):
            raise ValueError("task_id must be a UUID and attempt a positive integer")
        return self.staging_root / str(uuid.UUID(task_id)) / str(attempt)

    async def run(self, req: CryoRequest) -> StagedOutput:
        if not all(_DATASET_RE.fullmatch(d) for d in req.datasets) or len(set(req.datasets)) != len(req.datasets):
            raise ValueError("cryo dataset names must be distinct slugs")
        ensure_private_dir(self.staging_root)
        directory = self.staging_dir(req.task_id, req.attempt)
        shutil.rmtree(directory, ignore_errors=True)  # a redelivered attempt starts clean
        ensure_private_dir(directory.parent)
        ensure_private_dir(directory)
        try:
            started = time.perf_counter()
            summary = await self._freeze(req, directory)
            elapsed = time.perf_counter() - started
            if summary.get("n_errored", 0) > 0:
                raise Unavailable(
                    CRYO_CHUNKS_ERRORED,
                    f"cryo reported {summary['n_errored']} failed chunk(s) for {', '.join(req.datasets)} "
                    f"[{req.block_range.start}, {req.block_range.end}); attempt failed",
                    category="rpc",
                )
            files = await asyncio.to_thread(self._collect, req, directory)
            return StagedOutput(directory, files, summary, elapsed)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            _remove_if_empty(directory.parent)
            raise

    # --- running Cryo ----------------------------------------------------------------

    def _kwargs(self, req: CryoRequest, directory: Path) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "start_block": req.block_range.start,
            "end_block": req.block_range.end,  # exclusive, like ours
            "rpc": req.rpc_url,
            "output_dir": str(directory),
            "chunk_size": len(req.block_range),  # one file per dataset and range
            "no_report": True,
            "verbose": False,
            "overwrite": True,
            "max_retries": req.max_retries,
            "initial_backoff": req.initial_backoff_ms,
        }
        if req.max_concurrent_requests is not None:
            kwargs["max_concurrent_requests"] = req.max_concurrent_requests
        if req.requests_per_second is not None:
            kwargs["requests_per_second"] = req.requests_per_second
        return kwargs

    async def _freeze(self, req: CryoRequest, directory: Path) -> dict[str, int]:
        kwargs = self._kwargs(req, directory)
        request = json.dumps({"datatypes": list(req.datasets), "kwargs": kwargs}).encode()
        # The request (it holds the RPC URL) reaches the child's stdin from a 0600 file in the
        # private staging directory, unlinked once open: writing it into a stdin pipe raced
        # with the child under uvloop ("handler is closed") and failed about 1 attempt in 20.
        request_path = directory.parent / f".request-{uuid.uuid4().hex}"
        fd = os.open(request_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(request)
        with request_path.open("rb") as stdin:
            request_path.unlink()
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trace_platform.adapters.extract.cryo_child",
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(self.timeout_seconds):
                out, _ = await proc.communicate()
        except TimeoutError:
            raise Unavailable(CRYO_TIMEOUT, "cryo did not finish in time; attempt failed", category="cryo") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: stop the child's whole group
                _kill_group(proc.pid)
                await proc.wait()
        try:
            result = json.loads(out.decode() or "null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            result = None
        if not isinstance(result, dict):
            raise _cryo_failed(f"child exited {proc.returncode} without a result")
        if result.get("missing"):
            raise FailedPrecondition(
                CRYO_NOT_INSTALLED,
                f"cryo is not installed for {sys.executable}: install the `cryo` package (a runtime dependency "
                "of trace-platform); attempt failed",
                category="cryo",
            )
        if not result.get("ok"):
            # Cryo's own message is often just 'failed' and may quote the URL: keep only its type.
            raise _cryo_failed(str(result.get("error", "")).split(":", 1)[0])
        summary = result.get("summary")
        return {k: int(v) for k, v in summary.items()} if isinstance(summary, dict) else {}

    # --- checking the output ---------------------------------------------------------

    def _collect(self, req: CryoRequest, directory: Path) -> tuple[StagedFile, ...]:
        files: list[StagedFile] = []
        total = 0
        for entry in sorted(directory.iterdir()):
            if entry.name == ".cryo" and entry.is_dir() and not entry.is_symlink():
                continue  # Cryo's own reports; Trace does not depend on them
            m = _FILE_RE.fullmatch(entry.name)
            if entry.is_symlink() or not entry.is_file() or m is None or m["ds"] not in req.datasets:
                raise _bad_output(f"unexpected entry in cryo output for {', '.join(req.datasets)}")
            start, last = int(m["s"]), int(m["e"])
            if not req.block_range.start <= start <= last < req.block_range.end:
                raise _bad_output("cryo output file lies outside the requested range")
            size = entry.stat().st_size
            total += size
            if (
                len(files) + 1 > self.caps.max_files
                or size > self.caps.max_file_bytes
                or total > self.caps.max_total_bytes
            ):
                raise FailedPrecondition(
                    ARTIFACT_CAP_EXCEEDED, "cryo output exceeds the artifact caps", category="output"
                )
            rows = self._check_parquet(entry, req.chain_id)
            obj = ManifestObject(key=entry.name, size_bytes=size, sha256=_sha256(entry), row_count=rows)
            files.append(StagedFile(entry, BlockRange(start, last + 1), obj, m["ds"]))
        files.sort(key=lambda f: (f.dataset, f.block_range))
        for dataset in req.datasets:  # every dataset covers the range exactly
            cursor = req.block_range.start
            own = [f for f in files if f.dataset == dataset]
            for f in own:
                if f.block_range.start != cursor:
                    break
                cursor = f.block_range.end
            if not own or cursor != req.block_range.end:
                raise _bad_output(f"cryo output for {dataset} does not cover the requested range exactly")
        return tuple(files)

    @staticmethod
    def _check_parquet(path: Path, chain_id: int | None) -> int:
        try:
            rows = int(pq.read_metadata(path).num_rows)
            if chain_id is not None and rows:
                table = pq.read_table(path, columns=["chain_id"])
                bounds = pc.min_max(table.column("chain_id"))
                if bounds["min"].as_py() != chain_id or bounds["max"].as_py() != chain_id:
                    raise FailedPrecondition(
                        CHAIN_ID_MISMATCH, "the RPC pool serves another chain than the job's chain_id", category="rpc"
                    )
        except TraceError:
            raise
        except Exception:
            raise _bad_output("cryo output is not a readable Parquet file with a chain_id column") from None
        return rows


def _cryo_failed(detail: str) -> Unavailable:
    return Unavailable(
        CRYO_FAILED,
        f"cryo failed before collecting ({detail or 'no detail'}): RPC pool unreachable or refused; attempt failed",
        category="rpc",
    )


def _bad_output(message: str) -> FailedPrecondition:
    return FailedPrecondition(UNEXPECTED_OUTPUT, message, category="output")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
