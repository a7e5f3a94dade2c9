"""The contract between the chain_sync planner and the cryo_ingest operator: the task
config the Dispatcher writes for one range of one or more streams of a job (trusted:
workers never take it from users). Streams that share an RPC pool, chunk size, window
and cursor are extracted by one Cryo call, so blocks and transactions fetch every block
once; each stream still gets its own dataset version and publication."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trace_platform.core.chain_sync import ChainSyncSpec
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.manifest import derive_dataset_version
from trace_platform.core.planner import BlockRange

OPERATOR = "cryo_ingest"


@dataclass(frozen=True)
class CryoOutput:
    """One stream's share of the task: what Cryo extracts and where it is published."""

    dataset_key: str
    cryo_dataset_name: str
    dataset_uuid: str
    dataset_version: str
    config_hash: str


@dataclass(frozen=True)
class CryoTaskConfig:
    sync: str
    chain_id: int
    rpc_pool: str
    range_start: int
    range_end: int
    outputs: tuple[CryoOutput, ...]

    @property
    def block_range(self) -> BlockRange:
        return BlockRange(self.range_start, self.range_end)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outputs": [asdict(o) for o in self.outputs]}

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CryoTaskConfig:
        try:
            outputs = tuple(CryoOutput(**o) for o in raw["outputs"])
            config = CryoTaskConfig(**{**raw, "outputs": outputs})
        except (TypeError, KeyError):
            raise InvalidArgument("CRYO_TASK_CONFIG", "cryo_ingest config has missing or unknown fields") from None
        if not 0 <= config.range_start < config.range_end:
            raise InvalidArgument("CRYO_TASK_CONFIG", "cryo_ingest range must satisfy 0 <= start < end")
        names = [o.cryo_dataset_name for o in outputs]
        if not outputs or len(set(names)) != len(names):
            raise InvalidArgument("CRYO_TASK_CONFIG", "cryo_ingest needs distinct datasets")
        return config


def task_config(spec: ChainSyncSpec, group: tuple[tuple[str, str], ...], block_range: BlockRange) -> CryoTaskConfig:
    """``group``: the (dataset_key, dataset_uuid) of every stream the task extracts."""
    outputs = []
    for dataset_key, dataset_uuid in group:
        stream = spec.stream(dataset_key)
        version = derive_dataset_version(dataset_uuid, block_range.start, block_range.end, stream.config_hash)
        outputs.append(CryoOutput(dataset_key, stream.cryo_dataset_name, dataset_uuid, version, stream.config_hash))
    lead = spec.stream(group[0][0])
    return CryoTaskConfig(
        sync=spec.name,
        chain_id=spec.chain_id,
        rpc_pool=lead.rpc_pool,
        range_start=block_range.start,
        range_end=block_range.end,
        outputs=tuple(outputs),
    )
