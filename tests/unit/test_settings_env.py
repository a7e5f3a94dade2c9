"""Settings from the environment (issue 12, item 2): one derived variable per field, every
type's parsing and its error, the older names, unknown look-alikes, rules between fields."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from trace_platform.core import settings_env
from trace_platform.core.config import Settings, SettingsError, settings_from_env
from trace_platform.core.settings_env import load, value_of, variables


def _leaf_paths(cls: type, prefix: str = "") -> list[str]:
    """Walked here independently of settings_env, so a field it missed shows up."""
    hints = get_type_hints(cls)
    out: list[str] = []
    for f in fields(cls):
        tp = hints[f.name]
        if is_dataclass(tp) and isinstance(tp, type):
            out += _leaf_paths(tp, f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def test_every_leaf_field_is_exactly_one_variable_named_after_its_path() -> None:
    got = {v.path: v.name for v in variables()}
    assert list(got) == _leaf_paths(Settings)
    for path, name in got.items():
        if path != "rpc_pools":
            assert name == "TRACE_" + path.replace(".", "_").upper()
    assert got["query.slots"] == "TRACE_QUERY_SLOTS"
    assert got["invoker.limits.timeout_seconds"] == "TRACE_INVOKER_LIMITS_TIMEOUT_SECONDS"
    names = [n for v in variables() for n in v.names]
    assert len(names) == len(set(names))


def test_a_type_without_a_parser_is_refused_at_derivation() -> None:
    with pytest.raises(TypeError, match="no environment parser"):
        settings_env._kind("x.y", dict[str, int])


# A value for each kind, and the value it must load as.
_SAMPLES: dict[str, tuple[str, Any]] = {
    "bool": ("yes", True),
    "int": ("7", 7),
    "float": ("12.5", 12.5),
    "str": ("s-777", "s-777"),
    "path": ("/srv/p777", Path("/srv/p777")),
    "str list": ("a1, b2", ("a1", "b2")),
    "path list": ("/a,/b", (Path("/a"), Path("/b"))),
}


def _sample(tmp: Path, path: str, kind: str) -> tuple[str, Any, dict[str, str]]:
    """(raw, expected, other variables it needs) for the field at ``path``."""
    pem = tmp / "x.pem"
    pem.write_text("pem")
    special: dict[str, tuple[str, Any, dict[str, str]]] = {
        "database_url": ("postgresql://u@h/db", "postgresql://u@h/db", {}),
        "query.memory_limit": ("3GB", "3GB", {}),
        "query.temp_limit": ("2GiB", "2GiB", {}),
        "query.process_headroom": ("100MB", "100MB", {}),
        "query.egress_allow": ("10.0.0.0/8,.example.com", ("10.0.0.0/8", ".example.com"), {}),
        "delivery.allowed_networks": ("10.0.0.0/8", ("10.0.0.0/8",), {}),
        "queue.backend": ("sqs", "sqs", {"TRACE_SQS_QUEUE_URL": "https://sqs.example/1/q"}),
        "queue.sqs_queue_url": ("https://sqs.example/1/q", "https://sqs.example/1/q", {}),
        "invoker.backend": ("lambda", "lambda", {}),
        "invoker.limits.timeout_seconds": ("100.5", 100.5, {}),
        "tokens.ttl_seconds": ("777", 777, {}),
        "db_pool_min": ("3", 3, {}),
        "tls.cert_file": (str(pem), pem, {"TRACE_TLS_KEY_FILE": str(pem)}),
        "tls.key_file": (str(pem), pem, {"TRACE_TLS_CERT_FILE": str(pem)}),
        "tls.client_cert_file": (str(pem), pem, {"TRACE_TLS_CLIENT_KEY_FILE": str(pem)}),
        "tls.client_key_file": (str(pem), pem, {"TRACE_TLS_CLIENT_CERT_FILE": str(pem)}),
        "tls.client_ca_file": (str(pem), pem, {"TRACE_TLS_CERT_FILE": str(pem), "TRACE_TLS_KEY_FILE": str(pem)}),
        "tls.ca_file": (str(pem), pem, {}),
    }
    if path in special:
        return special[path]
    if path.endswith("listen") or path.startswith("endpoints."):
        return ("10.1.2.3:7000", "10.1.2.3:7000", {})
    raw, expected = _SAMPLES[kind]
    return raw, expected, {}


@pytest.mark.parametrize("var", [v for v in variables() if v.kind != "pools"], ids=lambda v: v.name)
def test_every_field_is_set_by_its_derived_name(var: settings_env.Variable, tmp_path: Path) -> None:
    raw, expected, extra = _sample(tmp_path, var.path, var.kind)
    assert expected != var.default  # else the test would prove nothing
    loaded = load({var.name: raw, **extra})
    assert value_of(loaded.settings, var.path) == expected
    assert loaded.sources[var.path] == var.name


# Every name in use before the derivation, written out: removing one from ALIASES fails here.
OLD_NAMES = {
    "TRACE_TOKEN_ISSUER": "tokens.issuer",
    "TRACE_TOKEN_KEY_DIR": "tokens.key_dir",
    "TRACE_TOKEN_TTL_SECONDS": "tokens.ttl_seconds",
    "TRACE_DEV_HS256_SECRET": "tokens.dev_hs256_secret",
    "TRACE_LEASE_SECONDS": "dispatcher.lease_seconds",
    "TRACE_MAX_ATTEMPTS": "dispatcher.default_max_attempts",
    "TRACE_RETRY_BASE_SECONDS": "dispatcher.retry_base_seconds",
    "TRACE_RETRY_MAX_SECONDS": "dispatcher.retry_max_seconds",
    "TRACE_OUTBOX_INTERVAL_SECONDS": "dispatcher.outbox_interval_seconds",
    "TRACE_OUTBOX_BATCH": "dispatcher.outbox_batch",
    "TRACE_REAPER_INTERVAL_SECONDS": "dispatcher.reaper_interval_seconds",
    "TRACE_RETRY_INTERVAL_SECONDS": "dispatcher.retry_interval_seconds",
    "TRACE_PLANNER_INTERVAL_SECONDS": "dispatcher.planner_interval_seconds",
    "TRACE_HEAD_OBSERVER_INTERVAL_SECONDS": "dispatcher.head_observer_interval_seconds",
    "TRACE_WORKER_ID": "worker.worker_id",
    "TRACE_S3_ENDPOINT_URL": "object_store.s3_endpoint_url",
    "AWS_REGION": "object_store.s3_region",
    "AWS_ACCESS_KEY_ID": "object_store.s3_access_key_id",
    "AWS_SECRET_ACCESS_KEY": "object_store.s3_secret_access_key",
    "TRACE_USER_JWT_ISSUER": "user_auth.issuer",
    "TRACE_USER_JWT_SECRET": "user_auth.hs256_secret",
    "TRACE_USER_JWKS_PATH": "user_auth.jwks_path",
    "TRACE_USER_JWT_MAX_LIFETIME_SECONDS": "user_auth.max_lifetime_seconds",
    "TRACE_BUNDLE_KEYS_DIR": "invoker.trusted_keys_dir",
    "TRACE_INVOKER_TIMEOUT_SECONDS": "invoker.limits.timeout_seconds",
    "TRACE_INVOKER_LAMBDA_FUNCTION": "invoker.lambda_function_name",
    "TRACE_WEBHOOK_ALLOWED_NETWORKS": "delivery.allowed_networks",
    "TRACE_WEBHOOK_ALLOW_HTTP": "delivery.allow_http",
    "TRACE_DISPATCHER_ADDR": "endpoints.dispatcher",
    "TRACE_QUERY_ADDR": "endpoints.query",
    "TRACE_INVOKER_ADDR": "endpoints.invoker",
    "TRACE_SQS_QUEUE_URL": "queue.sqs_queue_url",
    "TRACE_SQS_ENDPOINT_URL": "queue.sqs_endpoint_url",
    "TRACE_SQS_WAIT_SECONDS": "queue.sqs_wait_seconds",
}
# Older names that were already the derived ones (kept by the derivation itself).
OLD_DERIVED = [
    "TRACE_DATABASE_URL", "TRACE_LISTEN", "TRACE_DATA_DIR", "TRACE_WORKER_TOKEN", "TRACE_ADMIN_TOKEN",
    "TRACE_SCRATCH_URI", "TRACE_DATASETS_URI", "TRACE_WORKER_CONCURRENCY", "TRACE_QUERY_SLOTS",
    "TRACE_QUERY_ADMISSION_QUEUE", "TRACE_QUERY_USER_TIMEOUT_SECONDS", "TRACE_QUERY_TASK_TIMEOUT_SECONDS",
    "TRACE_QUERY_MEMORY_LIMIT", "TRACE_QUERY_THREADS", "TRACE_QUERY_TEMP_LIMIT",
    "TRACE_QUERY_ALLOW_WRITABLE_VERSIONS", "TRACE_QUERY_FILE_ROOTS", "TRACE_QUERY_EGRESS_ALLOW",
    "TRACE_INVOKER_BACKEND", "TRACE_INVOKER_BUNDLE_ROOTS", "TRACE_INVOKER_TASK_ENDPOINT", "TRACE_INVOKER_BWRAP",
    "TRACE_INVOKER_ALLOW_UNSANDBOXED", "TRACE_INVOKER_PYTHON", "TRACE_INVOKER_NODE",
    "TRACE_INVOKER_LAMBDA_ENDPOINT_URL", "TRACE_SINK_MAX_BATCH_BYTES", "TRACE_SINK_MAX_BATCH_ROWS",
    "TRACE_SINK_RETRY_MAX_SECONDS", "TRACE_DELIVERY_INTERVAL_SECONDS", "TRACE_DELIVERY_MAX_ATTEMPTS",
    "TRACE_DELIVERY_RETRY_BASE_SECONDS", "TRACE_DELIVERY_RETRY_MAX_SECONDS", "TRACE_DELIVERY_TIMEOUT_SECONDS",
    "TRACE_METRICS_LISTEN", "TRACE_HEALTH_LISTEN", "TRACE_QUEUE_BACKEND", "TRACE_TLS_CERT_FILE",
    "TRACE_TLS_KEY_FILE", "TRACE_TLS_CLIENT_CA_FILE", "TRACE_TLS_CA_FILE", "TRACE_TLS_CLIENT_CERT_FILE",
    "TRACE_TLS_CLIENT_KEY_FILE", "TRACE_TLS_ALLOW_PLAINTEXT", "TRACE_BUNDLES_URI",
    "TRACE_BUNDLES_MAX_UPLOAD_BYTES", "TRACE_BUNDLES_UPLOAD_URL_SECONDS", "TRACE_BUNDLES_MAX_CONCURRENT",
    "TRACE_BUNDLES_IDLE_SECONDS",
]  # fmt: skip


@pytest.mark.parametrize(("old", "path"), OLD_NAMES.items())
def test_every_older_name_still_sets_its_field(old: str, path: str, tmp_path: Path) -> None:
    var = settings_env.by_path()[path]
    raw, expected, extra = _sample(tmp_path, path, var.kind)
    loaded = load({old: raw, **extra})
    assert value_of(loaded.settings, path) == expected
    assert loaded.sources[path] == old


def test_older_names_that_were_already_derived_still_exist() -> None:
    derived = {v.name for v in variables()}
    assert set(OLD_DERIVED) <= derived


def test_rpc_pool_variables_still_load() -> None:
    s = settings_from_env({"TRACE_RPC_POOL_MAIN_URL": "https://rpc.example/k"})
    assert s.rpc_pools == {"main": "https://rpc.example/k"}
    pools = settings_from_env(
        {"TRACE_RPC_POOL_X_URLS": "https://a.example,https://b.example", "TRACE_RPC_POOL_X_RPS": "5"}
    )
    assert len(pools.rpc_pools["x"].endpoints) == 2  # type: ignore[union-attr]


def test_two_trace_names_of_one_field_must_agree() -> None:
    with pytest.raises(SettingsError) as err:
        load({"TRACE_LEASE_SECONDS": "1", "TRACE_DISPATCHER_LEASE_SECONDS": "2"})
    assert (err.value.variable, err.value.problem) == (
        "TRACE_LEASE_SECONDS",
        "conflicts with TRACE_DISPATCHER_LEASE_SECONDS: set only one of them",
    )
    same = load({"TRACE_LEASE_SECONDS": "2", "TRACE_DISPATCHER_LEASE_SECONDS": "2"})
    assert same.settings.dispatcher.lease_seconds == 2.0


def test_the_trace_name_wins_over_the_ambient_aws_one() -> None:
    s = settings_from_env({"AWS_REGION": "eu-west-1", "TRACE_OBJECT_STORE_S3_REGION": "us-west-2"})
    assert s.object_store.s3_region == "us-west-2"
    assert settings_from_env({"AWS_REGION": "eu-west-1"}).object_store.s3_region == "eu-west-1"


# --- each type's parsing and its message ------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "Yes"])
def test_true_words(raw: str) -> None:
    assert settings_from_env({"TRACE_QUERY_ALLOW_WRITABLE_VERSIONS": raw}).query.allow_writable_versions is True


@pytest.mark.parametrize("raw", ["0", "false", "no", "NO"])
def test_false_words(raw: str) -> None:
    assert settings_from_env({"TRACE_WEBHOOK_ALLOW_HTTP": raw}).delivery.allow_http is False


def test_lists_split_trim_and_drop_empty_items() -> None:
    s = settings_from_env(
        {"TRACE_QUERY_EGRESS_ALLOW": " 10.0.0.0/8 , ,.example.com ", "TRACE_QUERY_FILE_ROOTS": "/a:/b,/c"}
    )
    assert s.query.egress_allow == ("10.0.0.0/8", ".example.com")
    assert s.query.file_roots == (Path("/a"), Path("/b"), Path("/c"))


def test_empty_means_unset() -> None:
    s = settings_from_env({"TRACE_QUERY_SLOTS": "", "TRACE_USER_JWKS_PATH": "", "TRACE_LISTEN": ""})
    assert (s.query.slots, s.user_auth.jwks_path, s.listen) == (2, None, "127.0.0.1:50051")


@pytest.mark.parametrize(
    ("variable", "raw", "problem"),
    [
        ("TRACE_QUERY_SLOTS", "2.5", "not an integer: '2.5'"),
        ("TRACE_QUERY_SLOTS", "-1", "must not be negative: '-1'"),
        ("TRACE_DISPATCHER_LEASE_SECONDS", "abc", "not a number: 'abc'"),
        ("TRACE_LEASE_SECONDS", "inf", "not a finite number: 'inf'"),
        ("TRACE_DELIVERY_TIMEOUT_SECONDS", "nan", "not a finite number: 'nan'"),
        ("TRACE_INVOKER_LIMITS_CPU_SECONDS", "1e3", "not an integer: '1e3'"),
        ("TRACE_QUERY_ALLOW_WRITABLE_VERSIONS", "on", "not a boolean (1/0, true/false, yes/no): 'on'"),
        ("TRACE_QUERY_MEMORY_LIMIT", "lots", "not a size such as 512MB or 1GiB: 'lots'"),
        ("TRACE_METRICS_LISTEN", "nohost", "not host:port: 'nohost'"),
        ("TRACE_ENDPOINTS_QUERY", "h:99999", "not host:port: 'h:99999'"),
        ("TRACE_INVOKER_BACKEND", "docker", "not one of local, lambda: 'docker'"),
        ("TRACE_QUEUE_BACKEND", "rabbit", "not one of postgres, sqs: 'rabbit'"),
        ("TRACE_TLS_CA_FILE", "/nonexistent/ca.pem", "not a readable file: '/nonexistent/ca.pem'"),
        ("TRACE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/8,nope", "not a network: 'nope'"),
        ("TRACE_QUERY_EGRESS_ALLOW", "http://x", "not a network or host name: 'http://x'"),
        ("TRACE_SQS_WAIT_SECONDS", "21", "must be 0-20 (SQS long polling): 21"),
        ("TRACE_DATABASE_URL", "mysql://u:pw-zz9@h/db", "not a postgresql:// URL"),
    ],
)
def test_a_bad_value_names_its_variable_and_problem(variable: str, raw: str, problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env({variable: raw})
    assert (err.value.variable, err.value.problem) == (variable, problem)
    assert str(err.value) == f"{variable}: {problem}"


# --- unknown variables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "problem"),
    [
        ("TRACE_QUERY_SLOST", "not a setting (did you mean TRACE_QUERY_SLOTS?)"),
        ("TRACE_LEASE_SECOND", "not a setting (did you mean TRACE_LEASE_SECONDS?)"),
        ("TRACE_QUERY_BANANAS", "not a setting (docs/configuration.md lists them; see `trace config show`)"),
        (
            "TRACE_RPC_POOL_MAIN_ULR",
            "not a setting (an RPC pool variable ends in _URL, _URLS, _RPS, _CONCURRENCY, _MAX_LAG)",
        ),
    ],
)
def test_an_unknown_look_alike_is_an_error(variable: str, problem: str) -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env({variable: "3"})
    assert (err.value.variable, err.value.problem) == (variable, problem)


@pytest.mark.parametrize(
    "variable", [*settings_env.OTHER_VARIABLES, "TRACE_BENCH_CACHE", "TRACE_TEST_ADMIN_DSN", "TRACE_S1_REQUIRED"]
)
def test_trace_variables_of_other_tools_are_left_alone(variable: str) -> None:
    assert settings_from_env({variable: "x"}) == settings_from_env({})


# --- rules between fields ---------------------------------------------------------------


def test_rules_name_the_variables_that_were_set() -> None:
    with pytest.raises(SettingsError) as err:
        settings_from_env({"TRACE_TOKENS_TTL_SECONDS": "100", "TRACE_INVOKER_LIMITS_TIMEOUT_SECONDS": "60"})
    assert (err.value.variable, err.value.problem) == (
        "TRACE_TOKENS_TTL_SECONDS",
        "must be at least twice TRACE_INVOKER_LIMITS_TIMEOUT_SECONDS (60 s)",
    )
    with pytest.raises(SettingsError) as err:
        settings_from_env({"TRACE_DB_POOL_MIN": "20"})
    assert (err.value.variable, err.value.problem) == ("TRACE_DB_POOL_MIN", "must not exceed TRACE_DB_POOL_MAX (16)")


def test_a_certificate_needs_its_key(tmp_path: Path) -> None:
    pem = tmp_path / "c.pem"
    pem.write_text("x")
    with pytest.raises(SettingsError) as err:
        settings_from_env({"TRACE_TLS_CERT_FILE": str(pem)})
    assert (err.value.variable, err.value.problem) == (
        "TRACE_TLS_KEY_FILE",
        "required together with TRACE_TLS_CERT_FILE",
    )
