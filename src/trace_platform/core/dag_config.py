"""The DAG document: strict parsing of one DAG version into a frozen spec. Pure, no I/O.

Shape::

    name: transfers                 # the DAG's name in its org
    jobs:
      - name: ingest
        kind: chain_sync            # today's chain_sync document, without kind and name
        chain_sync: {chain_id: 1, mode: {...}, streams: {transactions: {...}}}
      - name: large_transfers
        kind: alert_evaluate
        bundle: <bundle id>         # a finalized bundle of the org (BundleService)
        alert: large transfers      # the name of an alert definition of the org
        upstream: ingest.transactions
        sql: SELECT block_number, value FROM dataset
      - name: enrich
        kind: udf
        bundle: <bundle id>
        upstream: [ingest.transactions]

An upstream names a job's output dataset: ``<chain_sync job>.<stream key>``, or the name
of a ``udf`` job (its one dataset). ``alert_evaluate`` publishes alert events only, so
nothing can read from it. Every problem raises ``InvalidArgument`` whose ``field`` (and
message) is the path of the node, e.g. ``jobs[1].upstream``; a value is never echoed
beyond names the document itself declares.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trace_platform.core.chain_sync import ChainSyncSpec, spec_from_dict
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.sql_gate import SqlRejected, check_sql
from trace_platform.core.yaml_strict import load_strict, scan_for_secrets

CHAIN_SYNC = "chain_sync"
ALERT_EVALUATE = "alert_evaluate"
UDF = "udf"
KINDS = (CHAIN_SYNC, ALERT_EVALUATE, UDF)
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_JOBS = 64
MAX_UPSTREAMS = 16
MAX_SQL_CHARS = 16_384
MAX_ALERT_NAME = 128
ALERT_RELATIONS = frozenset({"dataset"})  # what an alert_evaluate's SQL reads (its granted version)

# Reason codes (InvalidArgument).
NOT_A_MAPPING = "NOT_A_MAPPING"
UNKNOWN_KEY = "UNKNOWN_KEY"
MISSING_FIELD = "MISSING_FIELD"
INVALID_TYPE = "INVALID_TYPE"
INVALID_NAME = "INVALID_NAME"
INVALID_KIND = "INVALID_KIND"
OUT_OF_RANGE = "OUT_OF_RANGE"
DUPLICATE_JOB = "DUPLICATE_JOB"
UNKNOWN_UPSTREAM = "UNKNOWN_UPSTREAM"
DAG_CYCLE = "DAG_CYCLE"
UNKNOWN_BUNDLE = "UNKNOWN_BUNDLE"
UNKNOWN_ALERT = "UNKNOWN_ALERT"

# UUIDv5 namespace for the datasets udf jobs publish (identity: org, DAG name, job name).
UDF_DATASET_NAMESPACE = uuid.UUID("4f7c2d8e-91a3-5b6f-8c2e-0d5a7e3b9f14")


@dataclass(frozen=True)
class ChainSyncJob:
    name: str
    spec: ChainSyncSpec  # spec.name is the job's name: the chain_sync job it applies


@dataclass(frozen=True)
class AlertEvaluateJob:
    name: str
    bundle_id: str
    alert: str  # alert definition name, resolved to its id at deploy
    upstream: str
    sql: str


@dataclass(frozen=True)
class UdfJob:
    name: str
    bundle_id: str
    upstream: tuple[str, ...]


Job = ChainSyncJob | AlertEvaluateJob | UdfJob


def job_kind(job: Job) -> str:
    if isinstance(job, ChainSyncJob):
        return CHAIN_SYNC
    return ALERT_EVALUATE if isinstance(job, AlertEvaluateJob) else UDF


def upstreams(job: Job) -> tuple[str, ...]:
    if isinstance(job, AlertEvaluateJob):
        return (job.upstream,)
    return job.upstream if isinstance(job, UdfJob) else ()


@dataclass(frozen=True)
class DagSpec:
    name: str
    jobs: tuple[Job, ...]  # in document order

    def job(self, name: str) -> Job:
        return next(j for j in self.jobs if j.name == name)


def yaml_sha256(text: str) -> str:
    """A version's identity within its DAG: the bytes deployed (same YAML, same version)."""
    return hashlib.sha256(text.encode()).hexdigest()


def udf_dataset_uuid(org_id: str, dag_name: str, job_name: str) -> str:
    return str(uuid.uuid5(UDF_DATASET_NAMESPACE, f"udf:{uuid.UUID(org_id)}:{dag_name}:{job_name}"))


def udf_dataset_name(dag_name: str, job_name: str) -> str:
    return f"{dag_name}.{job_name}"


def parse_dag(text: str) -> DagSpec:
    """Parse and validate a DAG YAML document."""
    return dag_from_dict(load_strict(text))


def dag_from_dict(doc: Any) -> DagSpec:
    top = _mapping(doc, "")
    _only(top, "", required=("name", "jobs"))
    name = _name(top["name"], "name")
    raw_jobs = top["jobs"]
    if not isinstance(raw_jobs, list):
        raise _bad(INVALID_TYPE, "jobs", "must be a list of jobs")
    if not raw_jobs:
        raise _bad(MISSING_FIELD, "jobs", "must hold at least one job")
    if len(raw_jobs) > MAX_JOBS:
        raise _bad(OUT_OF_RANGE, "jobs", f"holds more than {MAX_JOBS} jobs")
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_jobs):
        job = _job(raw, f"jobs[{i}]")
        if job.name in seen:
            raise _bad(
                DUPLICATE_JOB, f"jobs[{i}].name", f"duplicate job name {job.name!r} (also jobs[{seen[job.name]}])"
            )
        seen[job.name] = i
        jobs.append(job)
    _check_upstreams(jobs)
    return DagSpec(name=name, jobs=tuple(jobs))


def _job(raw: Any, path: str) -> Job:
    m = _mapping(raw, path)
    for key in ("name", "kind"):
        if key not in m:
            raise _bad(MISSING_FIELD, f"{path}.{key}", "is required")
    name = _name(m["name"], f"{path}.name")
    kind = m["kind"]
    if kind == CHAIN_SYNC:
        _only(m, path, required=("name", "kind", "chain_sync"))
        body = _mapping(m["chain_sync"], f"{path}.chain_sync")
        for key in ("kind", "name"):
            if key in body:
                raise _bad(UNKNOWN_KEY, f"{path}.chain_sync.{key}", "is set by the job (kind and name)")
        scan_for_secrets(body, f"{path}.chain_sync")
        try:
            spec = spec_from_dict({**body, "kind": CHAIN_SYNC, "name": name})
        except InvalidArgument as exc:
            raise _nested(exc, f"{path}.chain_sync") from None
        return ChainSyncJob(name=name, spec=spec)
    if kind == ALERT_EVALUATE:
        _only(m, path, required=("name", "kind", "bundle", "alert", "upstream", "sql"))
        alert = _string(m["alert"], f"{path}.alert", MAX_ALERT_NAME)
        return AlertEvaluateJob(
            name=name,
            bundle_id=_bundle_id(m["bundle"], f"{path}.bundle"),
            alert=alert,
            upstream=_ref(m["upstream"], f"{path}.upstream"),
            sql=_gated(_string(m["sql"], f"{path}.sql", MAX_SQL_CHARS), f"{path}.sql"),
        )
    if kind == UDF:
        _only(m, path, required=("name", "kind", "bundle", "upstream"))
        raw_up = m["upstream"]
        refs = [raw_up] if isinstance(raw_up, str) else raw_up
        if not isinstance(refs, list) or not refs:
            raise _bad(INVALID_TYPE, f"{path}.upstream", "must name one upstream dataset or a list of them")
        if len(refs) > MAX_UPSTREAMS:
            raise _bad(OUT_OF_RANGE, f"{path}.upstream", f"names more than {MAX_UPSTREAMS} datasets")
        parsed = tuple(_ref(r, f"{path}.upstream[{i}]") for i, r in enumerate(refs))
        if len(set(parsed)) != len(parsed):
            raise _bad(DUPLICATE_JOB, f"{path}.upstream", "names a dataset twice")
        return UdfJob(name=name, bundle_id=_bundle_id(m["bundle"], f"{path}.bundle"), upstream=parsed)
    raise _bad(INVALID_KIND, f"{path}.kind", f"must be one of {', '.join(KINDS)}")


def _check_upstreams(jobs: list[Job]) -> None:
    """Every upstream names an output dataset of a job of this DAG; udf edges form no cycle."""
    index = {j.name: i for i, j in enumerate(jobs)}
    for i, job in enumerate(jobs):
        refs = upstreams(job)
        for k, ref in enumerate(refs):
            path = f"jobs[{i}].upstream" if isinstance(job, AlertEvaluateJob) else f"jobs[{i}].upstream[{k}]"
            head, _, key = ref.partition(".")
            if head not in index:
                raise _bad(UNKNOWN_UPSTREAM, path, f"unknown job {head!r}")
            target = jobs[index[head]]
            if isinstance(target, ChainSyncJob):
                if not key or key not in {s.dataset_key for s in target.spec.streams}:
                    raise _bad(UNKNOWN_UPSTREAM, path, f"job {head!r} has no stream {key!r} (use <job>.<stream>)")
            elif isinstance(target, UdfJob):
                if key:
                    raise _bad(UNKNOWN_UPSTREAM, path, f"udf job {head!r} publishes one dataset: name it {head!r}")
            else:
                raise _bad(UNKNOWN_UPSTREAM, path, f"job {head!r} is an alert_evaluate: it publishes no dataset")
    _check_acyclic(jobs, index)


def _check_acyclic(jobs: list[Job], index: dict[str, int]) -> None:
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str) -> None:
        state[name] = 1
        job = jobs[index[name]]
        for ref in upstreams(job):
            head = ref.partition(".")[0]
            if state.get(head) == 1:
                raise _bad(
                    DAG_CYCLE, f"jobs[{index[name]}].upstream", f"job {name!r} is part of a cycle through {head!r}"
                )
            if state.get(head) is None:
                visit(head)
        state[name] = 2

    for job in jobs:
        if job.name not in state:
            visit(job.name)


# --- field helpers -------------------------------------------------------------------------


def _bad(reason: str, path: str, what: str) -> InvalidArgument:
    return InvalidArgument(reason, f"{path}: {what}", field=path)


def _nested(exc: InvalidArgument, prefix: str) -> InvalidArgument:
    """An error of the embedded chain_sync document, its path under the job's."""
    inner = exc.metadata.get("field", "")
    path = f"{prefix}.{inner}" if inner and inner != "(document root)" else prefix
    message = exc.message
    if inner and message.startswith(inner):
        message = message[len(inner) :].lstrip(" :")
    return InvalidArgument(exc.reason, f"{path}: {message}", **{**exc.metadata, "field": path})


def _mapping(raw: Any, path: str) -> Mapping[Any, Any]:
    if not isinstance(raw, dict):
        shown = path or "(document root)"
        raise _bad(NOT_A_MAPPING, shown, "must be a mapping")
    return raw


def _only(m: Mapping[Any, Any], path: str, required: tuple[str, ...]) -> None:
    for key in m:
        if key not in required:
            shown = key if isinstance(key, str) and len(key) <= 64 else "<key>"
            full = f"{path}.{shown}" if path else shown
            raise _bad(UNKNOWN_KEY, full, "unknown field")
    for key in required:
        if key not in m:
            raise _bad(MISSING_FIELD, f"{path}.{key}" if path else key, "is required")


def _name(raw: Any, path: str) -> str:
    if not isinstance(raw, str):
        raise _bad(INVALID_TYPE, path, "must be a string")
    if not NAME_RE.fullmatch(raw):
        raise _bad(INVALID_NAME, path, f"must match {NAME_RE.pattern}")
    return raw


def _ref(raw: Any, path: str) -> str:
    if not isinstance(raw, str):
        raise _bad(INVALID_TYPE, path, "must name a dataset as <job> or <job>.<stream>")
    head, dot, key = raw.partition(".")
    if not NAME_RE.fullmatch(head) or (dot and not NAME_RE.fullmatch(key)):
        raise _bad(INVALID_NAME, path, "must name a dataset as <job> or <job>.<stream>")
    return raw


def _string(raw: Any, path: str, limit: int) -> str:
    if not isinstance(raw, str):
        raise _bad(INVALID_TYPE, path, "must be a string")
    if not raw.strip() or len(raw) > limit:
        raise _bad(OUT_OF_RANGE, path, f"must be 1 to {limit} characters")
    return raw


def _gated(sql: str, path: str) -> str:
    """The query gate's verdict at deploy, not at the first publication: the task reads its
    one granted version as ``dataset``. Its reason code, never the SQL, in the error."""
    try:
        check_sql(sql, allowed_relations=ALERT_RELATIONS)
    except SqlRejected as exc:
        raise InvalidArgument(exc.reason, f"{path}: {exc}", field=path) from None
    return sql


def _bundle_id(raw: Any, path: str) -> str:
    try:
        return str(uuid.UUID(raw)) if isinstance(raw, str) else _raise(path)
    except ValueError:
        return _raise(path)


def _raise(path: str) -> str:
    raise _bad(INVALID_TYPE, path, "must be a bundle id (a UUID returned by the bundle upload)")


def canonical_jobs(spec: DagSpec) -> list[dict[str, Any]]:
    """The jobs as plain data (what dag_jobs stores), for routing and display."""
    out: list[dict[str, Any]] = []
    for job in spec.jobs:
        if isinstance(job, ChainSyncJob):
            out.append({"name": job.name, "kind": CHAIN_SYNC, "chain_sync": job.spec.canonical()})
        elif isinstance(job, AlertEvaluateJob):
            out.append(
                {
                    "name": job.name,
                    "kind": ALERT_EVALUATE,
                    "bundle": job.bundle_id,
                    "alert": job.alert,
                    "upstream": [job.upstream],
                    "sql": job.sql,
                }
            )
        else:
            out.append({"name": job.name, "kind": UDF, "bundle": job.bundle_id, "upstream": list(job.upstream)})
    return out


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
