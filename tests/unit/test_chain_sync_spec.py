"""chain_sync YAML: the reference shape parses; every bad document names its path."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from trace_platform.core.chain_sync import (
    FixedTarget,
    FollowHead,
    check_rpc_pools,
    derive_dataset_uuid,
    parse_chain_sync,
    registry_name,
    rpc_pool_env_var,
)
from trace_platform.core.errors import InvalidArgument

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"

FIXED = """\
kind: chain_sync
name: local_bootstrap
chain_id: 31337
mode:
  kind: fixed_target
  from_block: 0
  to_block: 1000   # end-exclusive
streams:
  blocks:
    cryo_dataset_name: blocks
    rpc_pool: standard
    chunk_size: 100
    max_inflight: 4
  logs:
    cryo_dataset_name: logs
    rpc_pool: standard
    chunk_size: 50
    max_inflight: 2
"""

FOLLOW = """\
kind: chain_sync
name: local_follow
chain_id: 31337
mode: {kind: follow_head, from_block: 10, tail_lag: 2, head_poll_interval_seconds: 1, max_head_age_seconds: 5}
streams:
  blocks: {cryo_dataset_name: blocks, rpc_pool: standard, chunk_size: 10, max_inflight: 3}
"""


def refuse(text: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        parse_chain_sync(text)
    return err.value


def test_fixed_target_parses_into_a_frozen_spec() -> None:
    spec = parse_chain_sync(FIXED)
    assert spec.name == "local_bootstrap" and spec.chain_id == 31337
    assert spec.mode == FixedTarget(from_block=0, to_block=1000)
    assert [s.dataset_key for s in spec.streams] == ["blocks", "logs"]
    logs = spec.stream("logs")
    assert (logs.cryo_dataset_name, logs.rpc_pool, logs.chunk_size, logs.max_inflight) == ("logs", "standard", 50, 2)
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_follow_head_parses() -> None:
    spec = parse_chain_sync(FOLLOW)
    assert spec.mode == FollowHead(from_block=10, tail_lag=2, head_poll_interval_seconds=1, max_head_age_seconds=5)


def test_head_polling_may_be_fractional_and_an_integer_stays_an_integer() -> None:
    spec = parse_chain_sync(FOLLOW.replace("head_poll_interval_seconds: 1", "head_poll_interval_seconds: 0.25"))
    assert isinstance(spec.mode, FollowHead) and spec.mode.head_poll_interval_seconds == 0.25
    # An integer document's canonical form (and so its hash) is what it was before.
    whole = parse_chain_sync(FOLLOW).canonical()["mode"]["head_poll_interval_seconds"]
    assert whole == 1 and type(whole) is int


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0.1", "OUT_OF_RANGE"),  # below MIN_HEAD_POLL_SECONDS
        ("0", "OUT_OF_RANGE"),
        ("-1", "OUT_OF_RANGE"),
        ("86401", "OUT_OF_RANGE"),
        (".nan", "INVALID_TYPE"),
        (".inf", "INVALID_TYPE"),
        ("'1'", "INVALID_TYPE"),
        ("true", "INVALID_TYPE"),
    ],
)
def test_head_polling_out_of_bounds_is_refused_with_its_path(value: str, reason: str) -> None:
    err = refuse(FOLLOW.replace("head_poll_interval_seconds: 1", f"head_poll_interval_seconds: {value}"))
    assert (err.reason, err.metadata["field"]) == (reason, "mode.head_poll_interval_seconds")


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("chain_sync*.yaml")))
def test_shipped_examples_parse(name: str) -> None:
    assert parse_chain_sync((EXAMPLES / name).read_text()).streams


def test_yaml_hash_ignores_layout_and_sees_meaning() -> None:
    base = parse_chain_sync(FIXED).yaml_hash
    reordered = FIXED.replace("chain_id: 31337\n", "").replace(
        "kind: chain_sync\n", "kind: chain_sync\nchain_id: 31337\n"
    )
    assert parse_chain_sync(reordered + "# a comment\n").yaml_hash == base
    assert parse_chain_sync(FIXED.replace("chunk_size: 50", "chunk_size: 51")).yaml_hash != base
    assert len(base) == 64


@pytest.mark.parametrize(
    "old, new, reason, path",
    [
        ("to_block: 1000", "to_block: 0", "INVALID_BLOCK_RANGE", "mode.to_block"),
        ("from_block: 0", "from_block: 1000", "INVALID_BLOCK_RANGE", "mode.to_block"),
        ("from_block: 0", "from_block: -1", "OUT_OF_RANGE", "mode.from_block"),
        ("chunk_size: 100", "chunk_size: 0", "OUT_OF_RANGE", "streams.blocks.chunk_size"),
        ("chunk_size: 50", "chunk_size: -5", "OUT_OF_RANGE", "streams.logs.chunk_size"),
        ("max_inflight: 4", "max_inflight: 0", "OUT_OF_RANGE", "streams.blocks.max_inflight"),
        ("chunk_size: 100", "chunk_size: '100'", "INVALID_TYPE", "streams.blocks.chunk_size"),
        ("chunk_size: 100", "chunk_size: 1.5", "INVALID_TYPE", "streams.blocks.chunk_size"),
        ("max_inflight: 4", "max_inflight: true", "INVALID_TYPE", "streams.blocks.max_inflight"),
        ("chain_id: 31337", "chain_id: 0", "OUT_OF_RANGE", "chain_id"),
        ("name: local_bootstrap", "name: Local-Bootstrap", "INVALID_NAME", "name"),
        ("name: local_bootstrap", "name: ''", "INVALID_NAME", "name"),
        ("name: local_bootstrap", 'name: "local_bootstrap\\n"', "INVALID_NAME", "name"),
        (
            "rpc_pool: standard\n    chunk_size: 100",
            "rpc_pool: Std\n    chunk_size: 100",
            "INVALID_NAME",
            "streams.blocks.rpc_pool",
        ),
        ("cryo_dataset_name: logs", "cryo_dataset_name: 'logs;rm'", "INVALID_NAME", "streams.logs.cryo_dataset_name"),
        ("  blocks:\n", "  Blocks:\n", "INVALID_NAME", "streams"),
        ("kind: chain_sync", "kind: dag", "INVALID_KIND", "kind"),
        ("kind: fixed_target", "kind: sometimes", "INVALID_KIND", "mode.kind"),
        ("  to_block: 1000", "  to_block: 1000\n  until: forever", "UNKNOWN_KEY", "mode.until"),
        ("    max_inflight: 2\n", "    max_inflight: 2\n    api_key: abc\n", "UNKNOWN_KEY", "streams.logs.api_key"),
        ("name: local_bootstrap", "name: local_bootstrap\nowner: me", "UNKNOWN_KEY", "owner"),
        ("    max_inflight: 4\n", "", "MISSING_FIELD", "streams.blocks.max_inflight"),
        ("  to_block: 1000   # end-exclusive\n", "", "MISSING_FIELD", "mode.to_block"),
        ("chain_id: 31337\n", "", "MISSING_FIELD", "chain_id"),
        (
            "rpc_pool: standard\n    chunk_size: 100",
            "rpc_pool: http://10.0.0.1:8545\n    chunk_size: 100",
            "URL_IN_CONFIG",
            "streams.blocks.rpc_pool",
        ),
        (
            "rpc_pool: standard\n    chunk_size: 50",
            "rpc_pool: eth-mainnet.g.alchemy.com/v2/k\n    chunk_size: 50",
            "URL_IN_CONFIG",
            "streams.logs.rpc_pool",
        ),
        (
            "name: local_bootstrap",
            "name: local_bootstrap\nrpc: {url: 'wss://node.example'}",
            "URL_IN_CONFIG",
            "rpc.url",
        ),
        ("name: local_bootstrap", "name: local_bootstrap\nnotes: [ok, localhost:8545]", "URL_IN_CONFIG", "notes[1]"),
        (
            "rpc_pool: standard\n    chunk_size: 100",
            "rpc_pool: Zk8sQ2x7Lp0aV9bN3mR5tY1wE6uI4oP2\n    chunk_size: 100",
            "SECRET_IN_CONFIG",
            "streams.blocks.rpc_pool",
        ),
        ("name: local_bootstrap", "name: local_bootstrap\nkey: '0x" + "ab" * 32 + "'", "SECRET_IN_CONFIG", "key"),
        ("name: local_bootstrap", "name: local_bootstrap\nauth: 'Bearer abc.def'", "SECRET_IN_CONFIG", "auth"),
    ],
)
def test_bad_documents_name_the_offending_path(old: str, new: str, reason: str, path: str) -> None:
    assert old in FIXED
    err = refuse(FIXED.replace(old, new, 1))
    assert err.reason == reason
    assert err.metadata.get("field") == path
    assert path in err.message or path == "streams"


def test_follow_head_rules() -> None:
    err = refuse(FOLLOW.replace("max_head_age_seconds: 5", "max_head_age_seconds: 1"))
    assert (err.reason, err.metadata["field"]) == ("OUT_OF_RANGE", "mode.max_head_age_seconds")
    err = refuse(FOLLOW.replace("tail_lag: 2", "tail_lag: -1"))
    assert err.metadata["field"] == "mode.tail_lag"
    err = refuse(FOLLOW.replace("tail_lag: 2, ", "to_block: 5, tail_lag: 2, "))
    assert (err.reason, err.metadata["field"]) == ("UNKNOWN_KEY", "mode.to_block")


def test_secret_values_are_never_echoed() -> None:
    secret = "Zk8sQ2x7Lp0aV9bN3mR5tY1wE6uI4oP2"
    url = "https://user:pw@rpc.example/v2/KEY123"
    for value in (secret, url):
        err = refuse(FIXED.replace("rpc_pool: standard", f"rpc_pool: '{value}'", 1))
        assert value not in err.message and value not in str(err.metadata)
    err = refuse(FIXED.replace("  blocks:\n", f"  '{url}':\n"))
    assert err.reason == "URL_IN_CONFIG" and url not in err.message


@pytest.mark.parametrize(
    "text, reason",
    [
        ("a: 1\na: 2\n", "DUPLICATE_KEY"),
        (FIXED.replace("  logs:\n", "  blocks:\n"), "DUPLICATE_KEY"),
        ("base: &b {x: 1}\nother: *b\n", "YAML_ALIAS"),
        ("streams: {<<: {a: 1}}\n", "YAML_SYNTAX"),
        ("!!python/object:os.system {}\n", "YAML_SYNTAX"),
        ("streams: [\n", "YAML_SYNTAX"),
        ("- 1\n- 2\n", "NOT_A_MAPPING"),
        ("", "NOT_A_MAPPING"),
        ("x: '" + "a" * 70_000 + "'\n", "YAML_TOO_LARGE"),
        (FIXED.replace("streams:\n", "streams: {}\nignored:\n"), "UNKNOWN_KEY"),
    ],
)
def test_yaml_level_refusals(text: str, reason: str) -> None:
    assert refuse(text).reason == reason


def test_empty_streams_and_mode_shape() -> None:
    head, _, _ = FIXED.partition("streams:")
    assert refuse(head + "streams: {}\n").metadata["field"] == "streams"
    err = refuse(FIXED.replace("mode:\n  kind: fixed_target", "mode: fixed\nx:\n  kind: fixed_target"))
    assert err.reason in {"NOT_A_MAPPING", "UNKNOWN_KEY"}


def test_helpers() -> None:
    org = str(uuid.uuid4())
    a = derive_dataset_uuid(org, 1, "sync", "blocks")
    assert a == derive_dataset_uuid(org.upper(), 1, "sync", "blocks")
    others = {
        derive_dataset_uuid(org, 1, "sync", "logs"),
        derive_dataset_uuid(org, 2, "sync", "blocks"),
        derive_dataset_uuid(org, 1, "other", "blocks"),  # same stream name, another job: another dataset
        derive_dataset_uuid(str(uuid.uuid4()), 1, "sync", "blocks"),
    }
    assert a not in others and len(others) == 4
    assert rpc_pool_env_var("standard") == "TRACE_RPC_POOL_STANDARD_URL"
    assert registry_name("local_bootstrap", "blocks") == "local_bootstrap.blocks"


def test_an_unknown_rpc_pool_is_named_with_its_setting() -> None:
    spec = parse_chain_sync(FIXED)
    pools = {s.rpc_pool for s in spec.streams}
    check_rpc_pools(spec, pools)  # all configured: nothing to say
    missing = sorted(pools)[0]
    with pytest.raises(InvalidArgument) as exc:
        check_rpc_pools(spec, pools - {missing})
    assert exc.value.reason == "RPC_POOL_UNKNOWN" and exc.value.metadata["rpc_pool"] == missing
    assert rpc_pool_env_var(missing) in exc.value.message and exc.value.metadata["field"].endswith(".rpc_pool")
