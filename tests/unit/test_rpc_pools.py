"""RPC pool settings: the single-URL form as before, several endpoints with per-endpoint
limits from the environment or a pool file, and errors that never quote a URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trace_platform.core.config import SettingsError, settings_from_env
from trace_platform.core.rpc_pools import RpcEndpoint, RpcPool, parse_rpc_pools, pool_of

KEY = "sk-live-0123456789abcdef"


def test_single_url_stays_a_plain_url() -> None:
    pools = parse_rpc_pools({"TRACE_RPC_POOL_STANDARD_URL": f"https://eth.example/{KEY}"})
    assert pools == {"standard": f"https://eth.example/{KEY}"}
    pool = pool_of("standard", pools["standard"])
    assert not pool.proxied and pool.label(0) == "#0 eth.example"


def test_several_endpoints_with_one_limit_each_or_one_for_all() -> None:
    pools = parse_rpc_pools(
        {
            "TRACE_RPC_POOL_MAIN_NET_URLS": f"https://a.example/{KEY}, http://b.example:8545",
            "TRACE_RPC_POOL_MAIN_NET_RPS": "25,10.5",
            "TRACE_RPC_POOL_MAIN_NET_CONCURRENCY": "4",
            "TRACE_RPC_POOL_MAIN_NET_MAX_LAG": "3",
        }
    )
    pool = pools["main_net"]
    assert isinstance(pool, RpcPool) and pool.proxied and pool.max_head_lag == 3
    assert pool.endpoints == (
        RpcEndpoint(f"https://a.example/{KEY}", 25.0, 4),
        RpcEndpoint("http://b.example:8545", 10.5, 4),
    )
    assert [pool.label(i) for i in range(2)] == ["#0 a.example", "#1 b.example:8545"]
    assert KEY not in repr(pool)


def test_one_url_with_a_limit_is_proxied() -> None:
    pools = parse_rpc_pools({"TRACE_RPC_POOL_X_URL": "http://a.example", "TRACE_RPC_POOL_X_RPS": "5"})
    assert isinstance(pools["x"], RpcPool) and pools["x"].proxied


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"TRACE_RPC_POOL_X_URLS": f"https://a.example/{KEY},ftp://{KEY}@b"}, "TRACE_RPC_POOL_X_URLS"),
        ({"TRACE_RPC_POOL_X_URLS": "http://a,http://b", "TRACE_RPC_POOL_X_RPS": "1,2,3"}, "TRACE_RPC_POOL_X_RPS"),
        ({"TRACE_RPC_POOL_X_URLS": "http://a", "TRACE_RPC_POOL_X_RPS": "0"}, "TRACE_RPC_POOL_X_RPS"),
        ({"TRACE_RPC_POOL_X_URLS": "http://a", "TRACE_RPC_POOL_X_CONCURRENCY": "x"}, "TRACE_RPC_POOL_X_CONCURRENCY"),
        ({"TRACE_RPC_POOL_X_URLS": "http://a", "TRACE_RPC_POOL_X_URL": f"http://{KEY}"}, "TRACE_RPC_POOL_X_URLS"),
        ({"TRACE_RPC_POOL_X_RPS": "5"}, "TRACE_RPC_POOL_X_URLS"),
        ({"TRACE_RPC_POOL_X_URL": f"{KEY}"}, "TRACE_RPC_POOL_X_URL"),
    ],
)
def test_bad_settings_name_the_variable_never_the_url(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from_env(env)
    assert info.value.variable == variable
    assert KEY not in str(info.value)


def test_pool_file_json_and_yaml(tmp_path: Path) -> None:
    doc = {
        "pools": {
            "main": {
                "max_head_lag": 4,
                "probe_seconds": 1,
                "endpoints": [
                    {"url_env": "ALCHEMY_URL", "requests_per_second": 25, "max_concurrent_requests": 8},
                    "http://node.internal:8545",
                ],
            }
        }
    }
    path = tmp_path / "pools.json"
    path.write_text(json.dumps(doc))
    env = {"TRACE_RPC_POOL_FILE": str(path), "ALCHEMY_URL": f"https://eth.alchemy.example/v2/{KEY}"}
    pool = settings_from_env(env).rpc_pools["main"]
    assert pool == RpcPool(
        "main",
        (RpcEndpoint(f"https://eth.alchemy.example/v2/{KEY}", 25.0, 8), RpcEndpoint("http://node.internal:8545")),
        4,
        1.0,
    )
    yml = tmp_path / "pools.yaml"
    yml.write_text("pools:\n  main:\n    endpoints:\n      - url: http://a.example\n        requests_per_second: 3\n")
    assert parse_rpc_pools({"TRACE_RPC_POOL_FILE": str(yml)})["main"] == RpcPool(
        "main", (RpcEndpoint("http://a.example", 3.0),)
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"pools": {"main": {"endpoints": []}}},
        {"pools": {"main": {"endpoints": [{"url": f"ftp://{KEY}"}]}}},
        {"pools": {"main": {"endpoints": [{"url": "http://a", "rps": 3}]}}},
        {"pools": {"Main": {"endpoints": ["http://a"]}}},
        {"pools": {"main": {"endpoints": [{"url_env": "MISSING"}]}}},
        {"other": {}},
    ],
)
def test_bad_pool_files_are_refused(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SettingsError) as info:
        settings_from_env({"TRACE_RPC_POOL_FILE": str(path)})
    assert info.value.variable == "TRACE_RPC_POOL_FILE" or info.value.variable.startswith("TRACE_RPC_POOL_FILE ")
    assert KEY not in str(info.value)


def test_a_pool_in_both_file_and_environment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps({"pools": {"main": {"endpoints": ["http://a"]}}}))
    with pytest.raises(SettingsError, match="also set in the environment"):
        settings_from_env({"TRACE_RPC_POOL_FILE": str(path), "TRACE_RPC_POOL_MAIN_URL": "http://b"})
