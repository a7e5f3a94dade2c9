"""The ``chain_sync`` job document: strict parsing into a frozen spec.

Shape (the shorthand form; see docs/chain_sync.md)::

    kind: chain_sync
    name: mainnet_bootstrap
    chain_id: 1
    mode:
      kind: fixed_target          # or follow_head
      from_block: 0
      to_block: 20000000          # end-exclusive; follow_head has tail_lag,
                                  # head_poll_interval_seconds, max_head_age_seconds
                                  # and optional max_reorg_depth (default 64)
    streams:
      blocks:                     # dataset_key
        cryo_dataset_name: blocks
        rpc_pool: standard        # a pool name; its URL comes from TRACE_RPC_POOL_STANDARD_URL
        chunk_size: 2000
        max_inflight: 40
    verify:                       # optional: the integrity check as a scheduled job
      every_seconds: 600          # how often
      last_blocks: 1000           # the published blocks it checks, ending at synced_to
    compaction:                   # optional: merge finished ranges in the background
      target_blocks: 10000        # blocks per compacted object, 2..10,000,000

Every problem raises ``InvalidArgument`` whose ``field`` metadata (and message)
names the path of the offending node, e.g. ``streams.blocks.chunk_size``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from trace_platform.core.errors import InvalidArgument
from trace_platform.core.yaml_strict import join_path, load_strict, scan_for_secrets

KIND = "chain_sync"
SLUG_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_BLOCK = 2**63 - 1
MAX_CHUNK_SIZE = 10_000_000
MAX_INFLIGHT = 10_000
MAX_STREAMS = 64
MAX_SECONDS = 86_400
# The fastest head polling a job may ask for: one request per observation (the observer
# asks the chain id once a minute), so 0.25 s is 4 requests per second per (org, chain,
# pool), within any provider's free tier.
MIN_HEAD_POLL_SECONDS = 0.25
DEFAULT_MAX_REORG_DEPTH = 64  # follow_head mode.max_reorg_depth when unset
MAX_REORG_DEPTH = 10_000

# Reason codes (InvalidArgument unless said otherwise).
NOT_A_MAPPING = "NOT_A_MAPPING"
UNKNOWN_KEY = "UNKNOWN_KEY"
MISSING_FIELD = "MISSING_FIELD"
INVALID_TYPE = "INVALID_TYPE"
INVALID_NAME = "INVALID_NAME"
INVALID_KIND = "INVALID_KIND"
OUT_OF_RANGE = "OUT_OF_RANGE"
INVALID_BLOCK_RANGE = "INVALID_BLOCK_RANGE"
RPC_POOL_UNKNOWN = "RPC_POOL_UNKNOWN"

# UUIDv5 namespace for dataset UUIDs derived from {org_id, chain_id, sync name, dataset_key}.
DATASET_NAMESPACE = uuid.UUID("8d0a1f5e-3c7b-5e58-9a43-6b1c2f0d7e21")


@dataclass(frozen=True)
class FixedTarget:
    """Sync ``[from_block, to_block)`` and complete."""

    kind: ClassVar[str] = "fixed_target"
    from_block: int
    to_block: int


@dataclass(frozen=True)
class FollowHead:
    """Follow the observed head, ``tail_lag`` blocks behind; never completes."""

    kind: ClassVar[str] = "follow_head"
    from_block: int
    tail_lag: int
    # Seconds between head observations; fractional for fast chains (at least
    # MIN_HEAD_POLL_SECONDS). An integer in the document stays an integer here, so the
    # canonical form, and the hash, of an existing document does not change.
    head_poll_interval_seconds: float
    max_head_age_seconds: int
    # Deepest reorg repaired; a deeper one stops the job (REORG_TOO_DEEP). Optional in YAML.
    max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH


Mode = FixedTarget | FollowHead
MAX_VERIFY_LAST_BLOCKS = 10_000  # what one VerifyChainSync call may check


@dataclass(frozen=True)
class VerifySchedule:
    """Run the integrity check every ``every_seconds`` over the last ``last_blocks`` published."""

    every_seconds: int
    last_blocks: int


MAX_COMPACTION_BLOCKS = 10_000_000


@dataclass(frozen=True)
class CompactionPolicy:
    """Merge runs of adjacent finished ranges of a stream into one object of at most
    ``target_blocks`` blocks (servers/chain_sync/compaction.py)."""

    target_blocks: int


@dataclass(frozen=True)
class StreamSpec:
    dataset_key: str
    cryo_dataset_name: str
    rpc_pool: str
    chunk_size: int
    max_inflight: int

    @property
    def config_hash(self) -> str:
        """What a task's output depends on besides its range (goes into the dataset version)."""
        return f"cryo_ingest.{self.cryo_dataset_name}:v1"


@dataclass(frozen=True)
class ChainSyncSpec:
    name: str
    chain_id: int
    mode: Mode
    streams: tuple[StreamSpec, ...]  # sorted by dataset_key
    verify: VerifySchedule | None = None
    compaction: CompactionPolicy | None = None

    def stream(self, dataset_key: str) -> StreamSpec:
        for s in self.streams:
            if s.dataset_key == dataset_key:
                return s
        raise KeyError(dataset_key)

    def canonical(self) -> dict[str, Any]:
        """The document's meaning as plain data: key order, comments and layout gone."""
        mode: dict[str, Any] = {"kind": self.mode.kind, **asdict(self.mode)}
        if mode.get("max_reorg_depth") == DEFAULT_MAX_REORG_DEPTH:
            del mode["max_reorg_depth"]  # the default: a document without it hashes as it always did
        # ``verify`` only when set: the hash of a document without it is what it always was.
        extra: dict[str, Any] = {"verify": asdict(self.verify)} if self.verify is not None else {}
        if self.compaction is not None:  # likewise: absent, the hash is unchanged
            extra["compaction"] = asdict(self.compaction)
        return {
            **extra,
            "kind": KIND,
            "name": self.name,
            "chain_id": self.chain_id,
            "mode": mode,
            "streams": {
                s.dataset_key: {
                    "cryo_dataset_name": s.cryo_dataset_name,
                    "rpc_pool": s.rpc_pool,
                    "chunk_size": s.chunk_size,
                    "max_inflight": s.max_inflight,
                }
                for s in self.streams
            },
        }

    @property
    def yaml_hash(self) -> str:
        """SHA-256 of the canonical JSON form: equal for documents that mean the same."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def rpc_pool_env_var(rpc_pool: str) -> str:
    """``standard`` -> ``TRACE_RPC_POOL_STANDARD_URL`` (where the pool's URL lives)."""
    return f"TRACE_RPC_POOL_{rpc_pool.upper()}_URL"


def registry_name(sync_name: str, dataset_key: str) -> str:
    """The name users query a stream by: ``<sync name>.<dataset_key>``."""
    return f"{sync_name}.{dataset_key}"


def derive_dataset_uuid(org_id: str, chain_id: int, sync_name: str, dataset_key: str) -> str:
    """Deterministic dataset UUID per ``{org_id, chain_id, sync name, dataset_key}`` (never user
    supplied). The sync name is part of it, as it is of the registry name
    ``<sync name>.<dataset_key>``: two jobs of one org on one chain with the same stream
    names are two datasets. (Streams created before the name was part of it keep the UUID
    they were stored with: chain_sync_streams.dataset_uuid is the identity, this only mints it.)
    ``:`` cannot occur in a slug, so the parts cannot run into each other."""
    org = str(uuid.UUID(org_id))
    return str(uuid.uuid5(DATASET_NAMESPACE, f"chain_sync:{org}:{chain_id}:{sync_name}:{dataset_key}"))


def check_rpc_pools(spec: ChainSyncSpec, configured: Collection[str]) -> None:
    """Every stream's pool must be one the platform has a URL for (``TRACE_RPC_POOL_<POOL>_URL``):
    refused at apply, not discovered later as ranges that fail. Names the pool, never a URL."""
    for s in spec.streams:
        if s.rpc_pool not in configured:
            path = f"streams.{s.dataset_key}.rpc_pool"
            raise InvalidArgument(
                RPC_POOL_UNKNOWN,
                f"{path}: rpc pool {s.rpc_pool!r} is not configured (set {rpc_pool_env_var(s.rpc_pool)})",
                field=path,
                rpc_pool=s.rpc_pool,
            )


# --- parsing -------------------------------------------------------------------------------


def parse_chain_sync(text: str) -> ChainSyncSpec:
    """Parse and validate a chain_sync YAML document."""
    doc = load_strict(text)
    scan_for_secrets(doc)
    return spec_from_dict(doc)


def spec_from_dict(doc: Any) -> ChainSyncSpec:
    top = _mapping(doc, "")
    _only(top, "", required=("kind", "name", "chain_id", "mode", "streams"), optional=("verify", "compaction"))
    if top["kind"] != KIND:
        raise InvalidArgument(INVALID_KIND, f"kind must be {KIND!r}", field="kind")
    name = _slug(top["name"], "name")
    chain_id = _int(top["chain_id"], "chain_id", low=1)
    mode = _mode(top["mode"])
    raw_streams = _mapping(top["streams"], "streams")
    if not raw_streams:
        raise InvalidArgument(MISSING_FIELD, "streams must name at least one stream", field="streams")
    if len(raw_streams) > MAX_STREAMS:
        raise InvalidArgument(OUT_OF_RANGE, f"streams holds more than {MAX_STREAMS} streams", field="streams")
    streams = []
    for key in sorted(raw_streams, key=str):
        if not isinstance(key, str) or not SLUG_RE.fullmatch(key):
            raise InvalidArgument(
                INVALID_NAME, f"stream key {key!r} under streams must match {SLUG_RE.pattern}", field="streams"
            )
        streams.append(_stream(key, raw_streams[key]))
    verify = _verify(top["verify"]) if "verify" in top else None
    compaction = _compaction(top["compaction"]) if "compaction" in top else None
    return ChainSyncSpec(
        name=name, chain_id=chain_id, mode=mode, streams=tuple(streams), verify=verify, compaction=compaction
    )


def _compaction(raw: Any) -> CompactionPolicy:
    m = _mapping(raw, "compaction")
    _only(m, "compaction", required=("target_blocks",))
    return CompactionPolicy(
        target_blocks=_int(m["target_blocks"], "compaction.target_blocks", low=2, high=MAX_COMPACTION_BLOCKS)
    )


def _verify(raw: Any) -> VerifySchedule:
    m = _mapping(raw, "verify")
    _only(m, "verify", required=("every_seconds", "last_blocks"))
    return VerifySchedule(
        every_seconds=_int(m["every_seconds"], "verify.every_seconds", low=1, high=MAX_SECONDS),
        last_blocks=_int(m["last_blocks"], "verify.last_blocks", low=1, high=MAX_VERIFY_LAST_BLOCKS),
    )


def _mode(raw: Any) -> Mode:
    m = _mapping(raw, "mode")
    if "kind" not in m:
        raise InvalidArgument(MISSING_FIELD, "mode.kind is required", field="mode.kind")
    kind = m["kind"]
    if kind == FixedTarget.kind:
        _only(m, "mode", required=("kind", "from_block", "to_block"))
        start = _int(m["from_block"], "mode.from_block", low=0)
        end = _int(m["to_block"], "mode.to_block", low=0)
        if end <= start:
            raise InvalidArgument(
                INVALID_BLOCK_RANGE,
                "mode.to_block must be greater than mode.from_block (to_block is end-exclusive)",
                field="mode.to_block",
            )
        return FixedTarget(from_block=start, to_block=end)
    if kind == FollowHead.kind:
        keys = ("kind", "from_block", "tail_lag", "head_poll_interval_seconds", "max_head_age_seconds")
        _only(m, "mode", required=keys, optional=("max_reorg_depth",))
        poll = _seconds(m["head_poll_interval_seconds"], "mode.head_poll_interval_seconds")
        max_age = _int(m["max_head_age_seconds"], "mode.max_head_age_seconds", low=1, high=MAX_SECONDS)
        if max_age <= poll:
            raise InvalidArgument(
                OUT_OF_RANGE,
                "mode.max_head_age_seconds must exceed mode.head_poll_interval_seconds "
                "(otherwise every observation is stale before the next poll)",
                field="mode.max_head_age_seconds",
            )
        return FollowHead(
            from_block=_int(m["from_block"], "mode.from_block", low=0),
            tail_lag=_int(m["tail_lag"], "mode.tail_lag", low=0),
            head_poll_interval_seconds=poll,
            max_head_age_seconds=max_age,
            max_reorg_depth=_int(
                m.get("max_reorg_depth", DEFAULT_MAX_REORG_DEPTH), "mode.max_reorg_depth", low=1, high=MAX_REORG_DEPTH
            ),
        )
    raise InvalidArgument(
        INVALID_KIND, f"mode.kind must be {FixedTarget.kind!r} or {FollowHead.kind!r}", field="mode.kind"
    )


def _stream(key: str, raw: Any) -> StreamSpec:
    path = f"streams.{key}"
    s = _mapping(raw, path)
    _only(s, path, required=("cryo_dataset_name", "rpc_pool", "chunk_size", "max_inflight"))
    return StreamSpec(
        dataset_key=key,
        cryo_dataset_name=_slug(s["cryo_dataset_name"], f"{path}.cryo_dataset_name"),
        rpc_pool=_slug(s["rpc_pool"], f"{path}.rpc_pool"),
        chunk_size=_int(s["chunk_size"], f"{path}.chunk_size", low=1, high=MAX_CHUNK_SIZE),
        max_inflight=_int(s["max_inflight"], f"{path}.max_inflight", low=1, high=MAX_INFLIGHT),
    )


def _mapping(raw: Any, path: str) -> Mapping[Any, Any]:
    if not isinstance(raw, dict):
        where = path or "the document"
        raise InvalidArgument(NOT_A_MAPPING, f"{where} must be a mapping", field=path or "(document root)")
    return raw


def _only(m: Mapping[Any, Any], path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    for key in m:
        if key not in required and key not in optional:
            shown = join_path(path, key) if isinstance(key, str) and len(key) <= 64 else join_path(path, "<key>")
            raise InvalidArgument(UNKNOWN_KEY, f"unknown key {shown}", field=shown)
    for key in required:
        if key not in m:
            raise InvalidArgument(MISSING_FIELD, f"{join_path(path, key)} is required", field=join_path(path, key))


def _int(raw: Any, path: str, low: int, high: int = MAX_BLOCK) -> int:
    # bool is an int subclass in Python; YAML 'true' is not a number.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidArgument(INVALID_TYPE, f"{path} must be an integer", field=path)
    if not low <= raw <= high:
        raise InvalidArgument(OUT_OF_RANGE, f"{path} must be between {low} and {high}", field=path)
    return raw


def _seconds(raw: Any, path: str) -> float:
    """A number of seconds, MIN_HEAD_POLL_SECONDS to MAX_SECONDS, as given (int or float)."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidArgument(INVALID_TYPE, f"{path} must be a number of seconds", field=path)
    if not MIN_HEAD_POLL_SECONDS <= raw <= MAX_SECONDS:
        raise InvalidArgument(
            OUT_OF_RANGE, f"{path} must be between {MIN_HEAD_POLL_SECONDS} and {MAX_SECONDS}", field=path
        )
    return raw


def _slug(raw: Any, path: str) -> str:
    if not isinstance(raw, str):
        raise InvalidArgument(INVALID_TYPE, f"{path} must be a string", field=path)
    if not SLUG_RE.fullmatch(raw):
        raise InvalidArgument(INVALID_NAME, f"{path} must match {SLUG_RE.pattern}", field=path)
    return raw
