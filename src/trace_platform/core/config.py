"""Typed settings. Built once from the environment (or flags) at the composition root
and passed down; nothing deeper reads ``os.environ``."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# Re-exported: defined apart so the CLI can read them without importing this module.
from trace_platform.core.defaults import DEFAULT_ADDR as DEFAULT_ADDR
from trace_platform.core.defaults import LITE_ORG_ID as LITE_ORG_ID
from trace_platform.core.defaults import default_data_dir as default_data_dir
from trace_platform.core.rpc_pools import RpcPool, rpc_pools_from_env


@dataclass(frozen=True)
class TokenSettings:
    """Capability-token signing. ES256 unless ``dev_hs256_secret`` is set explicitly."""

    issuer: str = "trace-dispatcher"
    key_dir: Path | None = None
    # Short: a stolen token dies fast. A live attempt's token is renewed by its heartbeats
    # (once less than half is left), so a long task never dies of expiry. Verifiers accept
    # no longer lifetime (exp - iat) than this. Keep it above twice the UDF timeout: a UDF
    # holds the token it was started with (adapters/invoker/bridge.py).
    ttl_seconds: int = 300
    dev_hs256_secret: str | None = None
    # How often verifiers may refetch the JWKS on an unknown kid.
    jwks_refresh_min_seconds: float = 1.0
    jwks_cache_seconds: float = 300.0


@dataclass(frozen=True)
class DispatcherSettings:
    lease_seconds: float = 30.0
    default_max_attempts: int = 3
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    outbox_interval_seconds: float = 0.5
    outbox_batch: int = 256
    reaper_interval_seconds: float = 1.0
    retry_interval_seconds: float = 0.5
    planner_interval_seconds: float = 0.25
    head_observer_interval_seconds: float = 1.0
    max_tasks_per_create: int = 1000
    max_config_bytes: int = 256 * 1024


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str = "worker-local"
    concurrency: int = 4
    receive_batch: int = 16
    visibility_seconds: float = 60.0
    poll_interval_seconds: float = 1.0


@dataclass(frozen=True)
class QuerySettings:
    """Query Service limits. Each of ``slots`` hardened DuckDB databases runs one query at a time."""

    slots: int = 2
    admission_queue: int = 8
    admission_wait_seconds: float = 2.0
    user_timeout_seconds: float = 60.0
    task_timeout_seconds: float = 300.0
    memory_limit: str = "1GB"
    threads: int = 2
    # Spill bound per query database (DuckDB's own default is 90% of the free disk).
    temp_limit: str = "4GB"
    # Address space a query process may map above ``memory_limit`` (its runtime, DuckDB's
    # per-database reservations): the OS cap that holds whatever the SQL allocates.
    process_headroom: str = "512MB"
    # Run queries even where dataset versions cannot be mounted read-only for the query
    # process (no mount namespace). Development only: fail closed otherwise.
    allow_writable_versions: bool = False
    default_limit: int = 1000
    max_limit: int = 10_000
    # Rows per Arrow IPC record batch in QueryArrow.
    arrow_batch_rows: int = 65_536
    # Local directories a ``file`` storage ref may point into (empty: <data dir>/objects).
    file_roots: tuple[Path, ...] = ()
    # TRACE_QUERY_EGRESS_ALLOW: CIDRs and host names (``.suffix`` for a domain) its storage
    # endpoints must lie in, or it does not start (servers/query/egress). Empty: no check.
    egress_allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class ObjectStoreSettings:
    """S3-API object store used by ``s3`` storage refs. Credentials come from the environment."""

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = field(default=None, repr=False)
    s3_secret_access_key: str | None = field(default=None, repr=False)
    connect_timeout_seconds: float = 5.0


@dataclass(frozen=True)
class UserAuthSettings:
    """User Bearer JWTs: an HS256 secret (Lite) or a JWKS file of the identity provider."""

    issuer: str = "trace-lite"
    hs256_secret: str | None = field(default=None, repr=False)
    jwks_path: Path | None = None
    # The longest user token accepted (exp - iat); exp and iat are required.
    max_lifetime_seconds: int = 86_400


@dataclass(frozen=True)
class UdfLimits:
    """What one UDF invocation may use (wall clock, rlimits, captured output)."""

    timeout_seconds: float = 60.0
    cpu_seconds: int = 60
    memory_bytes: int = 1024 * 1024 * 1024
    file_size_bytes: int = 64 * 1024 * 1024
    max_processes: int = 64
    max_open_files: int = 256
    stdout_limit_bytes: int = 1024 * 1024
    stderr_limit_bytes: int = 64 * 1024
    # Size of each private tmpfs (/tmp and /dev/shm) of the sandbox: RAM, so bounded.
    tmpfs_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class InvokerSettings:
    """The RuntimeInvoker: where bundles may come from, who signs them, how UDFs are sandboxed.

    Every UDF runs in its own mount, network and pid namespaces (bubblewrap, ``bwrap``);
    where they cannot be made the invoker refuses to run bundles (``SANDBOX_UNAVAILABLE``)
    unless ``allow_unsandboxed`` (development only: the UDF then sees the host's file
    system and network).
    """

    backend: str = "local"  # local | lambda
    # Directories a file:// bundle URL may point into (empty: <data dir>/bundles).
    bundle_roots: tuple[Path, ...] = ()
    # Ed25519 public keys (*.pub) trusted to sign bundles (None: <data dir>/bundle_keys).
    trusted_keys_dir: Path | None = None
    # Where per-invocation private run directories are made (short: it holds a unix socket).
    runs_dir: Path | None = None
    # The task API the UDF may reach (host:port), bridged into the sandbox as a unix socket.
    task_endpoint: str = ""
    # bubblewrap, the program that makes the sandbox (a name on PATH or a path).
    bwrap: str = "bwrap"
    # Run bundles even where no sandbox can be made. Development only: fail closed otherwise.
    allow_unsandboxed: bool = False
    limits: UdfLimits = field(default_factory=lambda: UdfLimits())
    # When the invoker runs as root each invocation gets its own uid from this range.
    sandbox_uid_base: int = 200_000
    sandbox_uid_count: int = 4096
    python: str = "/usr/bin/python3"
    node: str = "node"
    # Lambda backend: the platform-managed runner function (it picks the language runner
    # from the bundle manifest).
    lambda_function_name: str = "trace-udf-runner"
    lambda_endpoint_url: str | None = None


@dataclass(frozen=True)
class BundleSettings:
    """UDF bundles uploaded through the user API (BundleService)."""

    # Where bundles are stored: file:///dir (default <data dir>/bundles, the Lite
    # invoker's default bundle root) or s3://bucket/prefix (uploads by pre-signed PUT).
    uri: str | None = None
    # The largest archive accepted (the invoker's own cap is the same by default).
    max_upload_bytes: int = 64 * 1024 * 1024
    # How long a pre-signed PUT URL stays valid.
    upload_url_seconds: int = 900
    # Uploads and Finalizes checked at once by one process (each holds up to
    # max_upload_bytes of temporary disk); more are refused with RESOURCE_EXHAUSTED.
    max_concurrent: int = 4
    # A streamed upload that sends nothing for this long is abandoned (it holds a slot).
    idle_seconds: float = 30.0


@dataclass(frozen=True)
class TlsSettings:
    """gRPC transport security for the cluster profile (Lite stays plaintext on loopback).

    A server with ``cert_file`` and ``key_file`` serves TLS only; with ``client_ca_file``
    too it requires a client certificate signed by that CA (mutual TLS between platform
    services). ``ca_file``, ``client_cert_file`` and ``client_key_file`` are what this
    process presents and trusts when it dials another platform service."""

    cert_file: Path | None = None  # TRACE_TLS_CERT_FILE (PEM chain)
    key_file: Path | None = None  # TRACE_TLS_KEY_FILE
    client_ca_file: Path | None = None  # TRACE_TLS_CLIENT_CA_FILE: require client certificates
    ca_file: Path | None = None  # TRACE_TLS_CA_FILE: the CA of the services this process dials
    client_cert_file: Path | None = None  # TRACE_TLS_CLIENT_CERT_FILE
    client_key_file: Path | None = None  # TRACE_TLS_CLIENT_KEY_FILE
    # TRACE_TLS_ALLOW_PLAINTEXT: serve without TLS on an address other than loopback.
    allow_plaintext: bool = False

    @property
    def serves_tls(self) -> bool:
        return self.cert_file is not None

    @property
    def dials_tls(self) -> bool:
        return self.ca_file is not None or self.client_cert_file is not None


@dataclass(frozen=True)
class SinkSettings:
    """The buffer sink: consumes queue 'buffers', validates batches, upserts alert_events."""

    receive_batch: int = 8
    visibility_seconds: float = 60.0
    poll_interval_seconds: float = 1.0
    max_batch_bytes: int = 64 * 1024 * 1024
    max_batch_rows: int = 100_000
    # Transient failures (store or database down): the message reappears after
    # min(base * 2^(receives - 1), max) seconds; it is never dead-lettered for them.
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 60.0


@dataclass(frozen=True)
class DeliverySettings:
    """The Delivery Service: leases due alert_deliveries and sends webhooks."""

    interval_seconds: float = 0.5
    batch: int = 32
    lease_seconds: float = 30.0
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 600.0
    timeout_seconds: float = 5.0
    max_response_bytes: int = 64 * 1024
    # Networks webhooks may reach besides globally routable addresses (deny by default):
    # e.g. ("127.0.0.0/8",) for a receiver on this machine.
    allowed_networks: tuple[str, ...] = ()
    # Plain http webhooks (no TLS: the payload and any secret in the URL travel in the
    # clear). Off by default; Lite turns it on, elsewhere TRACE_WEBHOOK_ALLOW_HTTP=1.
    allow_http: bool = False


@dataclass(frozen=True)
class EndpointSettings:
    """Where the other roles listen (host:port), for a process that does not serve them
    itself (the cluster profile). Empty: the role is in this process (Lite), or absent."""

    dispatcher: str = ""  # TRACE_DISPATCHER_ADDR: workers, the Query Service's JWKS
    query: str = ""  # TRACE_QUERY_ADDR: alert_evaluate reads its inputs there
    invoker: str = ""  # TRACE_INVOKER_ADDR: workers run UDFs there (empty: in-process)


QUEUE_BACKENDS = ("postgres", "sqs")


@dataclass(frozen=True)
class QueueSettings:
    """The wake-up queue (the tasks and their state stay in PostgreSQL either way).

    ``sqs``: each logical queue is the SQS queue ``<sqs_queue_url>-<name>`` (``-tasks``,
    ``-buffers``), reached with the object store's region and credentials."""

    backend: str = "postgres"  # TRACE_QUEUE_BACKEND
    sqs_queue_url: str = ""  # TRACE_SQS_QUEUE_URL: the queues' common URL prefix
    sqs_endpoint_url: str | None = None  # TRACE_SQS_ENDPOINT_URL (empty: AWS's own)
    # Long polling: a receive waits up to this long for a message (SQS allows 0-20 s).
    sqs_wait_seconds: int = 10  # TRACE_SQS_WAIT_SECONDS


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    listen: str = DEFAULT_ADDR
    data_dir: Path = field(default_factory=default_data_dir)
    worker_token: str | None = None
    admin_token: str | None = None
    # Where tasks write batch artifacts (each attempt gets its own sub-prefix).
    scratch_uri: str | None = None
    db_pool_min: int = 2
    db_pool_max: int = 16
    tokens: TokenSettings = field(default_factory=TokenSettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    object_store: ObjectStoreSettings = field(default_factory=ObjectStoreSettings)
    user_auth: UserAuthSettings = field(default_factory=UserAuthSettings)
    # chain_sync RPC pools by name: a bare URL (TRACE_RPC_POOL_<POOL>_URL) or a pool of
    # endpoints with limits (core/rpc_pools.py); URLs may hold keys: never logged.
    rpc_pools: Mapping[str, str | RpcPool] = field(default_factory=dict, repr=False)
    # Where dataset versions are written: file:///dir (Lite default <data dir>/objects) or s3://bucket/prefix.
    datasets_uri: str | None = None
    invoker: InvokerSettings = field(default_factory=InvokerSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    endpoints: EndpointSettings = field(default_factory=EndpointSettings)
    # The process's Prometheus endpoint (host:port, every service's metrics); empty: off.
    metrics_listen: str = ""
    # A plaintext listener serving grpc.health.v1 only (host:port), for probes that speak
    # no TLS (Kubernetes' gRPC probes); empty: off.
    health_listen: str = ""
    queue: QueueSettings = field(default_factory=QueueSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    bundles: BundleSettings = field(default_factory=BundleSettings)

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


class SettingsError(ValueError):
    """A ``TRACE_*`` value that cannot be used: names the variable and what is wrong
    (never the value of a secret)."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(name, f"not a number: {raw!r}") from None
    if not math.isfinite(value):
        raise SettingsError(name, f"not a finite number: {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    try:
        return int(raw) if raw else default
    except ValueError:
        raise SettingsError(name, f"not an integer: {raw!r}") from None


def _listen(env: Mapping[str, str], name: str) -> str:
    """host:port (port 0-65535, ASCII digits), or empty."""
    raw = env.get(name, "")
    host, _, port = raw.rpartition(":")
    if raw and not (host and port.isascii() and port.isdigit() and int(port) <= 65535):
        raise SettingsError(name, f"not host:port: {raw!r}")
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated CIDR networks, each checked here so a typo fails at start-up."""
    networks = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(name, f"not a network: {network!r}") from None
    return networks


_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"\.?{_LABEL}(\.{_LABEL})*")


def _hosts_or_networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated CIDR networks or host names (``.example.com``: that domain)."""
    entries = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry):
                raise SettingsError(name, f"not a network or host name: {entry!r}") from None
    return entries


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read ``TRACE_*`` variables. Unset variables keep the embedded defaults; a value
    that cannot be used raises ``SettingsError`` naming its variable."""
    env = os.environ if env is None else env
    data_dir = Path(env["TRACE_DATA_DIR"]) if env.get("TRACE_DATA_DIR") else default_data_dir()
    tokens = TokenSettings(
        issuer=env.get("TRACE_TOKEN_ISSUER", "trace-dispatcher"),
        key_dir=Path(env["TRACE_TOKEN_KEY_DIR"]) if env.get("TRACE_TOKEN_KEY_DIR") else None,
        ttl_seconds=_int(env, "TRACE_TOKEN_TTL_SECONDS", 300),
        dev_hs256_secret=env.get("TRACE_DEV_HS256_SECRET") or None,
    )
    dispatcher = DispatcherSettings(
        lease_seconds=_float(env, "TRACE_LEASE_SECONDS", 30.0),
        default_max_attempts=_int(env, "TRACE_MAX_ATTEMPTS", 3),
        retry_base_seconds=_float(env, "TRACE_RETRY_BASE_SECONDS", 1.0),
        retry_max_seconds=_float(env, "TRACE_RETRY_MAX_SECONDS", 300.0),
        outbox_interval_seconds=_float(env, "TRACE_OUTBOX_INTERVAL_SECONDS", 0.5),
        outbox_batch=_int(env, "TRACE_OUTBOX_BATCH", 256),
        reaper_interval_seconds=_float(env, "TRACE_REAPER_INTERVAL_SECONDS", 1.0),
        retry_interval_seconds=_float(env, "TRACE_RETRY_INTERVAL_SECONDS", 0.5),
        planner_interval_seconds=_float(env, "TRACE_PLANNER_INTERVAL_SECONDS", 0.25),
        head_observer_interval_seconds=_float(env, "TRACE_HEAD_OBSERVER_INTERVAL_SECONDS", 1.0),
    )
    worker = WorkerSettings(
        worker_id=env.get("TRACE_WORKER_ID", "worker-local"),
        concurrency=_int(env, "TRACE_WORKER_CONCURRENCY", 4),
    )
    query = QuerySettings(
        slots=_int(env, "TRACE_QUERY_SLOTS", 2),
        admission_queue=_int(env, "TRACE_QUERY_ADMISSION_QUEUE", 8),
        user_timeout_seconds=_float(env, "TRACE_QUERY_USER_TIMEOUT_SECONDS", 60.0),
        task_timeout_seconds=_float(env, "TRACE_QUERY_TASK_TIMEOUT_SECONDS", 300.0),
        memory_limit=env.get("TRACE_QUERY_MEMORY_LIMIT", "1GB"),
        threads=_int(env, "TRACE_QUERY_THREADS", 2),
        temp_limit=env.get("TRACE_QUERY_TEMP_LIMIT", "4GB"),
        allow_writable_versions=env.get("TRACE_QUERY_ALLOW_WRITABLE_VERSIONS", "") in ("1", "true"),
        file_roots=tuple(Path(p) for p in env.get("TRACE_QUERY_FILE_ROOTS", "").split(os.pathsep) if p),
        egress_allow=_hosts_or_networks(env, "TRACE_QUERY_EGRESS_ALLOW"),
    )
    object_store = ObjectStoreSettings(
        s3_endpoint_url=env.get("TRACE_S3_ENDPOINT_URL") or None,
        s3_region=env.get("AWS_REGION", "us-east-1"),
        s3_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        s3_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
    )
    user_auth = UserAuthSettings(
        issuer=env.get("TRACE_USER_JWT_ISSUER", "trace-lite"),
        hs256_secret=env.get("TRACE_USER_JWT_SECRET") or None,
        jwks_path=Path(env["TRACE_USER_JWKS_PATH"]) if env.get("TRACE_USER_JWKS_PATH") else None,
        max_lifetime_seconds=_int(env, "TRACE_USER_JWT_MAX_LIFETIME_SECONDS", 86_400),
    )
    rpc_pools = rpc_pools_from_env(env)
    invoker = InvokerSettings(
        backend=env.get("TRACE_INVOKER_BACKEND", "local"),
        bundle_roots=tuple(Path(p) for p in env.get("TRACE_INVOKER_BUNDLE_ROOTS", "").split(os.pathsep) if p),
        trusted_keys_dir=Path(env["TRACE_BUNDLE_KEYS_DIR"]) if env.get("TRACE_BUNDLE_KEYS_DIR") else None,
        task_endpoint=env.get("TRACE_INVOKER_TASK_ENDPOINT", ""),
        bwrap=env.get("TRACE_INVOKER_BWRAP", "bwrap"),
        allow_unsandboxed=env.get("TRACE_INVOKER_ALLOW_UNSANDBOXED", "") in ("1", "true"),
        limits=UdfLimits(timeout_seconds=_float(env, "TRACE_INVOKER_TIMEOUT_SECONDS", 60.0)),
        python=env.get("TRACE_INVOKER_PYTHON", "/usr/bin/python3"),
        node=env.get("TRACE_INVOKER_NODE", "node"),
        lambda_function_name=env.get("TRACE_INVOKER_LAMBDA_FUNCTION", "trace-udf-runner"),
        lambda_endpoint_url=env.get("TRACE_INVOKER_LAMBDA_ENDPOINT_URL") or None,
    )
    sink = SinkSettings(
        max_batch_bytes=_int(env, "TRACE_SINK_MAX_BATCH_BYTES", 64 * 1024 * 1024),
        max_batch_rows=_int(env, "TRACE_SINK_MAX_BATCH_ROWS", 100_000),
        retry_max_seconds=_float(env, "TRACE_SINK_RETRY_MAX_SECONDS", 60.0),
    )
    delivery = DeliverySettings(
        interval_seconds=_float(env, "TRACE_DELIVERY_INTERVAL_SECONDS", 0.5),
        max_attempts=_int(env, "TRACE_DELIVERY_MAX_ATTEMPTS", 5),
        retry_base_seconds=_float(env, "TRACE_DELIVERY_RETRY_BASE_SECONDS", 2.0),
        retry_max_seconds=_float(env, "TRACE_DELIVERY_RETRY_MAX_SECONDS", 600.0),
        timeout_seconds=_float(env, "TRACE_DELIVERY_TIMEOUT_SECONDS", 5.0),
        allowed_networks=_networks(env, "TRACE_WEBHOOK_ALLOWED_NETWORKS"),
        allow_http=env.get("TRACE_WEBHOOK_ALLOW_HTTP", "") in ("1", "true"),
    )
    # A UDF keeps the capability token it started with (heartbeats renew only the
    # worker's copy once half of its life is spent), so the token must outlive the UDF.
    if tokens.ttl_seconds < 2 * invoker.limits.timeout_seconds:
        raise SettingsError(
            "TRACE_TOKEN_TTL_SECONDS",
            f"must be at least twice TRACE_INVOKER_TIMEOUT_SECONDS ({invoker.limits.timeout_seconds:g} s)",
        )
    return Settings(
        database_url=env.get("TRACE_DATABASE_URL") or None,
        listen=env.get("TRACE_LISTEN", DEFAULT_ADDR),
        data_dir=data_dir,
        worker_token=env.get("TRACE_WORKER_TOKEN") or None,
        admin_token=env.get("TRACE_ADMIN_TOKEN") or None,
        scratch_uri=env.get("TRACE_SCRATCH_URI") or None,
        tokens=tokens,
        dispatcher=dispatcher,
        worker=worker,
        query=query,
        object_store=object_store,
        user_auth=user_auth,
        rpc_pools=rpc_pools,
        datasets_uri=env.get("TRACE_DATASETS_URI") or None,
        invoker=invoker,
        sink=sink,
        delivery=delivery,
        endpoints=EndpointSettings(
            dispatcher=_listen(env, "TRACE_DISPATCHER_ADDR"),
            query=_listen(env, "TRACE_QUERY_ADDR"),
            invoker=_listen(env, "TRACE_INVOKER_ADDR"),
        ),
        metrics_listen=_listen(env, "TRACE_METRICS_LISTEN"),
        health_listen=_listen(env, "TRACE_HEALTH_LISTEN"),
        queue=_queue(env),
        tls=_tls(env),
        bundles=BundleSettings(
            uri=env.get("TRACE_BUNDLES_URI") or None,
            max_upload_bytes=_int(env, "TRACE_BUNDLES_MAX_UPLOAD_BYTES", 64 * 1024 * 1024),
            upload_url_seconds=_int(env, "TRACE_BUNDLES_UPLOAD_URL_SECONDS", 900),
            max_concurrent=_int(env, "TRACE_BUNDLES_MAX_CONCURRENT", 4),
            idle_seconds=_float(env, "TRACE_BUNDLES_IDLE_SECONDS", 30.0),
        ),
    )


def _tls(env: Mapping[str, str]) -> TlsSettings:
    def path(name: str) -> Path | None:
        raw = env.get(name, "")
        if not raw:
            return None
        if not Path(raw).is_file():
            raise SettingsError(name, f"not a readable file: {raw!r}")
        return Path(raw)

    tls = TlsSettings(
        cert_file=path("TRACE_TLS_CERT_FILE"),
        key_file=path("TRACE_TLS_KEY_FILE"),
        client_ca_file=path("TRACE_TLS_CLIENT_CA_FILE"),
        ca_file=path("TRACE_TLS_CA_FILE"),
        client_cert_file=path("TRACE_TLS_CLIENT_CERT_FILE"),
        client_key_file=path("TRACE_TLS_CLIENT_KEY_FILE"),
        allow_plaintext=env.get("TRACE_TLS_ALLOW_PLAINTEXT", "") in ("1", "true"),
    )
    for cert, key in (
        ("TRACE_TLS_CERT_FILE", "TRACE_TLS_KEY_FILE"),
        ("TRACE_TLS_CLIENT_CERT_FILE", "TRACE_TLS_CLIENT_KEY_FILE"),
    ):
        if bool(env.get(cert)) != bool(env.get(key)):
            raise SettingsError(
                key if env.get(cert) else cert, f"required together with {cert if env.get(cert) else key}"
            )
    if tls.client_ca_file and not tls.cert_file:
        raise SettingsError(
            "TRACE_TLS_CLIENT_CA_FILE", "needs TRACE_TLS_CERT_FILE and TRACE_TLS_KEY_FILE (mutual TLS is TLS first)"
        )
    return tls


def _queue(env: Mapping[str, str]) -> QueueSettings:
    backend = env.get("TRACE_QUEUE_BACKEND") or "postgres"
    if backend not in QUEUE_BACKENDS:
        raise SettingsError("TRACE_QUEUE_BACKEND", f"not one of {', '.join(QUEUE_BACKENDS)}: {backend!r}")
    url = env.get("TRACE_SQS_QUEUE_URL", "")
    if backend == "sqs" and not url.startswith(("https://", "http://")):
        raise SettingsError("TRACE_SQS_QUEUE_URL", "required (an http(s) queue URL) when TRACE_QUEUE_BACKEND=sqs")
    wait = _int(env, "TRACE_SQS_WAIT_SECONDS", 10)
    if not 0 <= wait <= 20:
        raise SettingsError("TRACE_SQS_WAIT_SECONDS", f"must be 0-20 (SQS long polling): {wait}")
    return QueueSettings(backend, url, env.get("TRACE_SQS_ENDPOINT_URL") or None, wait)
