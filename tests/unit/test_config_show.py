"""`trace config show` through the real CLI (a subprocess): effective values and their
sources, data-dir defaults, and no secret value anywhere in what it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trace_platform.adapters.objectstore.bundle_objects import bundles_uri
from trace_platform.adapters.objectstore.factory import datasets_uri, file_roots, scratch_uri
from trace_platform.core.config import Settings
from trace_platform.core.settings_env import variables
from trace_platform.core.settings_show import DATA_DIR_DEFAULTS, mask_url


def trace(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRACE_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "trace_platform", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _secret_env(tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """Every secret-kind field set to a unique value, plus URLs with keys in them."""
    env = {"TRACE_DATA_DIR": str(tmp_path)}
    secrets = []
    for i, var in enumerate(v for v in variables() if v.secret and v.kind != "pools"):
        value = f"sekrit{i}zq"
        env[var.name] = value
        secrets.append(value)
    env |= {
        "TRACE_DATABASE_URL": "postgresql://trace:pgpass77zq@db.internal:5432/trace?sslpassword=sslpw77zq",
        "TRACE_RPC_POOL_MAIN_URL": "https://eth.example/v2/rpckey11zq?apikey=rpckey12zq",
        "TRACE_RPC_POOL_ARCHIVE_URLS": "https://a.example/rpckey13zq,https://u:rpckey14zq@b.example:8545/",
        "TRACE_RPC_POOL_ARCHIVE_RPS": "5",
        "TRACE_S3_ENDPOINT_URL": "http://minio:miniopw15zq@minio.internal:9000",
        "TRACE_SQS_QUEUE_URL": "https://sqs.example/1/q?X-Amz-Signature=sig16zq",
    }
    return env, [*secrets, "pgpass77zq", "sslpw77zq", "rpckey11zq", "rpckey12zq", "rpckey13zq", "rpckey14zq",
                 "miniopw15zq", "sig16zq"]  # fmt: skip


@pytest.mark.parametrize("extra", [[], ["--json"], ["--lite"], ["--json", "--lite"]])
def test_no_secret_value_is_printed(extra: list[str], tmp_path: Path) -> None:
    env, secrets = _secret_env(tmp_path)
    assert len(secrets) >= 14  # every secret-kind field of today, and the URLs
    done = trace("config", "show", *extra, env=env)
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    leaked = [s for s in secrets if s in printed]
    assert leaked == []
    # Masked, not dropped: what is set still shows, and where it came from.
    assert "postgresql://trace:***@db.internal:5432/trace?sslpassword=***" in printed
    assert "eth.example" in printed and "b.example:8545" in printed


def test_json_shows_value_variable_and_source(tmp_path: Path) -> None:
    env, _ = _secret_env(tmp_path)
    env |= {"TRACE_LEASE_SECONDS": "7", "TRACE_QUERY_SLOTS": "5"}
    done = trace("config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    s = doc["settings"]
    assert set(s) == {v.path for v in variables()}
    assert s["query.slots"] == {"variable": "TRACE_QUERY_SLOTS", "aliases": [], "value": 5, "source": "env"}
    assert s["dispatcher.lease_seconds"]["variable"] == "TRACE_LEASE_SECONDS"  # the older name, as set
    assert s["dispatcher.lease_seconds"]["value"] == 7.0
    assert s["dispatcher.lease_seconds"]["aliases"] == ["TRACE_LEASE_SECONDS"]
    assert s["admin_token"] == {"variable": "TRACE_ADMIN_TOKEN", "aliases": [], "value": "***", "source": "env"}
    assert s["worker.concurrency"] == {
        "variable": "TRACE_WORKER_CONCURRENCY",
        "aliases": [],
        "value": 4,
        "source": "default",
    }
    assert s["rpc_pools"]["value"] == {"main": ["#0 eth.example"], "archive": ["#0 a.example", "#1 b.example:8545"]}
    assert s["datasets_uri"] == {
        "variable": "TRACE_DATASETS_URI",
        "aliases": [],
        "value": f"file://{tmp_path}/objects",
        "source": "data dir",
    }
    assert doc["data_dir"] == str(tmp_path)


def test_data_dir_flag_and_lite_defaults(tmp_path: Path) -> None:
    done = trace("config", "show", "--json", "--lite", "--data-dir", str(tmp_path / "d"), env={})
    s = json.loads(done.stdout)["settings"]
    assert s["data_dir"]["source"] == "--data-dir" and s["data_dir"]["value"] == str(tmp_path / "d")
    assert s["invoker.bundle_roots"]["value"] == [str(tmp_path / "d" / "bundles")]
    assert s["database_url"] == {
        "variable": "TRACE_DATABASE_URL",
        "aliases": [],
        "value": f"embedded PostgreSQL in {tmp_path / 'd' / 'pg'}",
        "source": "lite",
    }
    assert s["delivery.allow_http"]["value"] is True
    plain = json.loads(trace("config", "show", "--json", env={}).stdout)["settings"]
    assert plain["delivery.allow_http"]["value"] is False
    assert plain["database_url"]["value"] is None


def test_text_output_lists_every_variable(tmp_path: Path) -> None:
    done = trace("config", "show", env={"TRACE_DATA_DIR": str(tmp_path), "TRACE_QUERY_SLOTS": "5"})
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["VARIABLE", "SOURCE", "VALUE"]
    assert len(lines) == 1 + len(variables())
    assert any(line.split() == ["TRACE_QUERY_SLOTS", "env", "5"] for line in lines)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TRACE_QUERY_SLOTS", "x", "not an integer: 'x'"),
        ("TRACE_QUERY_SLOST", "3", "not a setting (did you mean TRACE_QUERY_SLOTS?)"),
        ("TRACE_WEBHOOK_ALLOW_HTTP", "maybe", "not a boolean (1/0, true/false, yes/no): 'maybe'"),
    ],
)
def test_a_bad_value_stops_config_show_by_name(variable: str, value: str, problem: str) -> None:
    done = trace("config", "show", env={variable: value})
    assert (done.returncode, done.stderr, done.stdout) == (2, f"error: {variable}: {problem}\n", "")


@pytest.mark.parametrize("command", [["worker", "run"], ["serve", "query"]], ids="-".join)
@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("TRACE_INVOKER_ALLOW_UNSANDBOXED", "sure", "not a boolean (1/0, true/false, yes/no): 'sure'"),
        ("TRACE_QUERY_SLOST", "3", "not a setting (did you mean TRACE_QUERY_SLOTS?)"),
    ],
)
def test_a_bad_value_stops_a_service_by_name_too(
    command: list[str], variable: str, value: str, problem: str, tmp_path: Path
) -> None:
    """Through real start-up paths: one line, exit 2, nothing started."""
    done = trace(*command, env={"TRACE_DATA_DIR": str(tmp_path), variable: value})
    assert (done.returncode, done.stderr, done.stdout) == (2, f"error: {variable}: {problem}\n", "")


def test_data_dir_defaults_match_what_the_services_use(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert DATA_DIR_DEFAULTS["datasets_uri"](tmp_path) == datasets_uri(settings)
    assert DATA_DIR_DEFAULTS["scratch_uri"](tmp_path) == scratch_uri(settings)
    assert DATA_DIR_DEFAULTS["query.file_roots"](tmp_path) == file_roots(settings)
    assert DATA_DIR_DEFAULTS["bundles.uri"](tmp_path) == bundles_uri(settings)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("https://tok@h/x", "https://***@h/x"),
        ("https://h/x?key=abc&b=1", "https://h/x?key=***&b=***"),
        ("http://u:pw@[::1]:9000", "http://u:***@[::1]:9000"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("http://h:notaport/", "***"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_webhook_or_rpc_url_shows_its_host_only() -> None:
    assert mask_url("https://hooks.example/services/T0/B0/k3y", host_only=True) == "https://hooks.example/***"
    assert mask_url("https://u:p@rpc.example:8545/", host_only=True) == "https://u:***@rpc.example:8545/"


def test_secret_fields_are_found_by_name() -> None:
    """Masking covers today's secrets, and a future field named like one."""
    from trace_platform.core.settings_env import _SECRET

    assert {v.path for v in variables() if v.secret} == {
        "worker_token",
        "admin_token",
        "tokens.dev_hs256_secret",
        "object_store.s3_access_key_id",
        "object_store.s3_secret_access_key",
        "user_auth.hs256_secret",
        "rpc_pools",
    }
    for name in ("webhook_secret", "api_key", "signing_key", "db_password", "oauth_credentials", "bearer_token"):
        assert _SECRET.search(name), name
    for name in ("key_dir", "key_file", "client_key_file", "ttl_seconds", "max_tokens_per_create"):
        assert not _SECRET.search(name), name
