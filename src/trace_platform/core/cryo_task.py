"""The contract between the chain_sync planner and the cryo_ingest operator: the task
config the Dispatcher writes for one range of one stream (trusted: workers never take
it from users)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trace_platform.core.chain_sync import ChainSyncSpec
from trace_platform.core.errors import InvalidArgument
from trace_platform.core.manifest import derive_dataset_version
from trace_platform.core.planner import BlockRange

OPERATOR = "cryo_ingest"


@dataclass(frozen=True)
class CryoTaskConfig:
    sync: str
    dataset_key: str
    chain_id: int
    cryo_dataset_name: str
    rpc_pool: str
    range_start: int
    range_end: int
    dataset_uuid: str
    dataset_version: str
    config_hash: str

    @property
    def block_range(self) -> BlockRange:
        return BlockRange(self.range_start, self.range_end)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> CryoTaskConfig:
        try:
            config = CryoTaskConfig(**raw)
        except TypeError:
            raise InvalidArgument("CRYO_TASK_CONFIG", "cryo_ingest config has missing or unknown fields") from None
        if not 0 <= config.range_start < config.range_end:
            raise InvalidArgument("CRYO_TASK_CONFIG", "cryo_ingest range must satisfy 0 <= start < end")
        return config


def task_config(spec: ChainSyncSpec, dataset_key: str, dataset_uuid: str, block_range: BlockRange) -> CryoTaskConfig:
    stream = spec.stream(dataset_key)
    return CryoTaskConfig(
        sync=spec.name,
        dataset_key=dataset_key,
        chain_id=spec.chain_id,
        cryo_dataset_name=stream.cryo_dataset_name,
        rpc_pool=stream.rpc_pool,
        range_start=block_range.start,
        range_end=block_range.end,
        dataset_uuid=dataset_uuid,
        dataset_version=derive_dataset_version(dataset_uuid, block_range.start, block_range.end, stream.config_hash),
        config_hash=stream.config_hash,
    )
