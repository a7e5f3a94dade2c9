"""What each setting means, and the table of docs/configuration.md made from it.

The names, types and defaults come from the dataclasses (core/settings_env.py); only the
meaning is written here. tests/unit/test_settings_doc.py fails when a field has no meaning
or the checked-in table differs from ``table()`` (regenerate: scripts/gen_config_doc.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trace_platform.core.settings_env import Variable, variables

BEGIN = "<!-- BEGIN GENERATED: scripts/gen_config_doc.py -->"
END = "<!-- END GENERATED -->"
_NO_VALUE = ("unset", "empty", "none")

MEANINGS: dict[str, str] = {
    "database_url": "PostgreSQL URL of the platform's database (Lite: an embedded server in `<data dir>/pg`).",
    "listen": "Address the gRPC server listens on (host:port).",
    "data_dir": "Data directory: keys, local objects, bundles, scratch, Lite's credentials.",
    "worker_token": "Token workers present to the Dispatcher (Lite: made at first start).",
    "admin_token": "Token of the admin API (Lite: made at first start).",
    "scratch_uri": "Where task attempts write batch artifacts: `file:///dir` or `s3://bucket/prefix`.",
    "db_pool_min": "Fewest PostgreSQL connections each pool keeps open.",
    "db_pool_max": "Most PostgreSQL connections per pool (at least db_pool_min).",
    "tokens.issuer": "`iss` of the capability tokens the Dispatcher signs.",
    "tokens.key_dir": "Directory of the Dispatcher's ES256 signing keys.",
    "tokens.ttl_seconds": "Lifetime of a capability token; at least twice the UDF timeout.",
    "tokens.dev_hs256_secret": "Sign capability tokens with this HS256 secret instead of ES256 (development only).",
    "tokens.jwks_refresh_min_seconds": "Least time between JWKS refetches on an unknown key id.",
    "tokens.jwks_cache_seconds": "How long a fetched JWKS is trusted.",
    "dispatcher.lease_seconds": "Lease of a running attempt; renewed by heartbeats, reaped when it lapses.",
    "dispatcher.default_max_attempts": "Attempts a task gets unless it says otherwise.",
    "dispatcher.retry_base_seconds": "First retry delay; doubles per attempt.",
    "dispatcher.retry_max_seconds": "Longest retry delay.",
    "dispatcher.outbox_interval_seconds": "How often the outbox relay publishes wake-ups.",
    "dispatcher.outbox_batch": "Outbox rows published per round.",
    "dispatcher.reaper_interval_seconds": "How often expired leases are reaped.",
    "dispatcher.retry_interval_seconds": "How often due retries are released.",
    "dispatcher.planner_interval_seconds": "How often the chain_sync planner runs.",
    "dispatcher.head_observer_interval_seconds": "How often chain heads are observed.",
    "dispatcher.max_tasks_per_create": "Most tasks one CreateTasks call may create.",
    "dispatcher.max_config_bytes": "Largest task config accepted.",
    "worker.worker_id": "This worker's id in leases and logs.",
    "worker.concurrency": "Tasks one worker runs at once.",
    "worker.receive_batch": "Wake-up messages received per poll.",
    "worker.visibility_seconds": "How long a received wake-up stays hidden from other workers.",
    "worker.poll_interval_seconds": "Pause between empty polls.",
    "query.slots": "Query databases (one query each at a time) of the Query Service.",
    "query.admission_queue": "Queries that may wait for a slot; more are refused.",
    "query.admission_wait_seconds": "Longest wait for a slot.",
    "query.user_timeout_seconds": "Time limit of a user's query.",
    "query.task_timeout_seconds": "Time limit of a task's query.",
    "query.memory_limit": "DuckDB memory limit per query database (a size: 1GB, 512MiB).",
    "query.threads": "DuckDB threads per query database.",
    "query.temp_limit": "Spill space per query database (a size).",
    "query.process_headroom": "Address space a query process may map above memory_limit (a size).",
    "query.allow_writable_versions": "Run queries where versions cannot be mounted read-only (development only).",
    "query.default_limit": "Rows returned when a query gives no limit.",
    "query.max_limit": "Most rows a query may ask for.",
    "query.arrow_batch_rows": "Rows per Arrow record batch in QueryArrow.",
    "query.file_roots": "Local directories a `file` storage ref may point into (empty: `<data dir>/objects`).",
    "query.egress_allow": "CIDRs and host names (`.suffix`: a domain) storage endpoints must lie in, or the "
    "Query Service does not start (empty: no check).",
    "object_store.s3_endpoint_url": "S3 API endpoint (MinIO, moto); unset: AWS.",
    "object_store.s3_region": "Region of the S3, SQS, STS and Lambda clients.",
    "object_store.s3_access_key_id": "Static access key id (unset: the default credential chain, e.g. IRSA).",
    "object_store.s3_secret_access_key": "Static secret access key.",
    "object_store.connect_timeout_seconds": "Connect timeout of object store calls.",
    "user_auth.issuer": "`iss` user JWTs must carry.",
    "user_auth.hs256_secret": "HS256 secret of user JWTs (Lite: made at first start).",
    "user_auth.jwks_path": "JWKS file of the identity provider that signs user JWTs.",
    "user_auth.max_lifetime_seconds": "Longest user token accepted (exp - iat).",
    "rpc_pools": "chain_sync RPC pools by name: `TRACE_RPC_POOL_<POOL>_URL` (one endpoint) or `_URLS` with "
    "`_RPS`, `_CONCURRENCY`, `_MAX_LAG`; or a pool file `TRACE_RPC_POOL_FILE` (core/rpc_pools.py).",
    "datasets_uri": "Where dataset versions are written: `file:///dir` or `s3://bucket/prefix`.",
    "invoker.backend": "Where UDFs run: `local` (bubblewrap sandbox) or `lambda`.",
    "invoker.bundle_roots": "Directories a `file://` bundle URL may point into (empty: `<data dir>/bundles`).",
    "invoker.trusted_keys_dir": "Ed25519 public keys (`*.pub`) trusted to sign bundles.",
    "invoker.runs_dir": "Where per-invocation run directories are made (unset: the temp directory).",
    "invoker.task_endpoint": "Task API (host:port) bridged into the sandbox.",
    "invoker.bwrap": "The bubblewrap program (a name on PATH or a path).",
    "invoker.allow_unsandboxed": "Run bundles where no sandbox can be made (development only).",
    "invoker.limits.timeout_seconds": "Wall-clock limit of one UDF invocation.",
    "invoker.limits.cpu_seconds": "CPU-time limit of one UDF invocation.",
    "invoker.limits.memory_bytes": "Address-space limit of a UDF.",
    "invoker.limits.file_size_bytes": "Largest file a UDF may write.",
    "invoker.limits.max_processes": "Most processes a UDF may run.",
    "invoker.limits.max_open_files": "Most open files of a UDF.",
    "invoker.limits.stdout_limit_bytes": "Captured stdout per invocation.",
    "invoker.limits.stderr_limit_bytes": "Captured stderr per invocation.",
    "invoker.limits.tmpfs_bytes": "Size of each private tmpfs (/tmp, /dev/shm) of the sandbox.",
    "invoker.sandbox_uid_base": "First uid given to invocations when the invoker runs as root.",
    "invoker.sandbox_uid_count": "Uids in that range.",
    "invoker.python": "Python interpreter of Python bundles.",
    "invoker.node": "Node.js of JavaScript bundles.",
    "invoker.lambda_function_name": "The platform's UDF runner function (lambda backend).",
    "invoker.lambda_endpoint_url": "Lambda API endpoint (moto); unset: AWS.",
    "sink.receive_batch": "Buffer messages received per poll.",
    "sink.visibility_seconds": "How long a received buffer message stays hidden.",
    "sink.poll_interval_seconds": "Pause between empty polls.",
    "sink.max_batch_bytes": "Largest alert batch file accepted.",
    "sink.max_batch_rows": "Most rows in one alert batch.",
    "sink.retry_base_seconds": "First delay after a transient failure; doubles per receive.",
    "sink.retry_max_seconds": "Longest delay after a transient failure.",
    "delivery.interval_seconds": "How often due webhook deliveries are leased.",
    "delivery.batch": "Deliveries leased per round.",
    "delivery.lease_seconds": "Lease of a delivery being sent.",
    "delivery.max_attempts": "Attempts per delivery before it fails.",
    "delivery.retry_base_seconds": "First retry delay of a delivery; doubles per attempt.",
    "delivery.retry_max_seconds": "Longest retry delay of a delivery.",
    "delivery.timeout_seconds": "Time limit of one webhook request.",
    "delivery.max_response_bytes": "Most response bytes read from a webhook.",
    "delivery.allowed_networks": "Networks (CIDRs) webhooks may reach besides globally routable addresses.",
    "delivery.allow_http": "Allow plain-http webhooks (Lite: on).",
    "endpoints.dispatcher": "The Dispatcher's address (host:port) for a process that does not serve it.",
    "endpoints.query": "The Query Service's address (host:port) for alert evaluation.",
    "endpoints.invoker": "The invoker's address (host:port); empty: in-process.",
    "metrics_listen": "Prometheus endpoint (host:port); empty: off.",
    "health_listen": "Plaintext grpc.health.v1-only listener (host:port) for probes; empty: off.",
    "queue.backend": "Wake-up queue: `postgres` or `sqs`.",
    "queue.sqs_queue_url": "Common URL prefix of the SQS queues (`<url>-tasks`, `<url>-buffers`).",
    "queue.sqs_endpoint_url": "SQS API endpoint (moto); unset: AWS.",
    "queue.sqs_wait_seconds": "SQS long-polling wait (0-20).",
    "tls.cert_file": "Server certificate chain (PEM): the server speaks TLS only.",
    "tls.key_file": "Server private key (with cert_file).",
    "tls.client_ca_file": "CA of client certificates: require mutual TLS.",
    "tls.ca_file": "CA of the platform services this process dials.",
    "tls.client_cert_file": "Client certificate this process presents when it dials.",
    "tls.client_key_file": "Its private key.",
    "tls.allow_plaintext": "Serve without TLS on an address other than loopback.",
    "bundles.uri": "Where uploaded bundles are stored: `file:///dir` or `s3://bucket/prefix`.",
    "bundles.max_upload_bytes": "Largest bundle archive accepted.",
    "bundles.upload_url_seconds": "Validity of a pre-signed upload URL.",
    "bundles.max_concurrent": "Uploads and finalizes checked at once; more are refused.",
    "bundles.idle_seconds": "A streamed upload idle this long is abandoned.",
}


def default_text(var: Variable) -> str:
    value: Any = var.default
    if var.kind == "pools":
        return "none"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) if value else "empty"
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home + "/") else text
    if value == "":
        return "empty"
    return str(value)


def table() -> str:
    lines = [
        "| Variable | Older name | Type | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for var in variables():
        kind = f"{var.kind}, optional" if var.optional else var.kind
        if var.secret:
            kind += ", secret"
        older = "" if var.kind == "pools" else ", ".join(f"`{a}`" for a in var.aliases)
        meaning = MEANINGS.get(var.path, "").replace("|", "\\|")
        default = default_text(var)
        cell = f"*{default}*" if default in _NO_VALUE else f"`{default}`"
        lines.append(f"| `{var.name}` | {older} | {kind} | {cell} | {meaning} |")
    return "\n".join(lines)


def rendered(document: str) -> str:
    """``document`` with its generated section replaced by today's table."""
    head, sep, rest = document.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise ValueError(f"no {BEGIN} ... {END} section")
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"
