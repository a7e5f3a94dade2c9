"""Typed settings. Built once from the environment (or flags) at the composition root
and passed down; nothing deeper reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

# Re-exported: defined apart so the CLI can read them without importing this module.
from trace_platform.core.defaults import DEFAULT_ADDR as DEFAULT_ADDR
from trace_platform.core.defaults import LITE_ORG_ID as LITE_ORG_ID
from trace_platform.core.defaults import default_data_dir as default_data_dir
from trace_platform.core.rpc_pools import RpcPool


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


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Read ``TRACE_*`` variables, one per field, named after it (core/settings_env.py;
    docs/configuration.md lists them). Unset variables keep the embedded defaults; a value
    that cannot be used raises ``SettingsError`` naming its variable."""
    from trace_platform.core.settings_env import load

    return load(os.environ if env is None else env).settings
