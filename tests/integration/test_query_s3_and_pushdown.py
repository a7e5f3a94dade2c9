"""The ``s3`` storage ref against a real S3 API server on loopback (moto's server mode),
a store that is down, and projection/predicate pushdown measured in bytes read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import grpc
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from tests.anvil import free_port
from tests.datasets import blocks_table, write_dataset
from tests.integration.conftest import ORG, claim_with_grants, user_client
from tests.moto_server import moto_server
from trace_platform.adapters.objectstore.stores import LocalObjectStore, ObjectStores, S3ObjectStore
from trace_platform.adapters.postgres.dataset_repository import DatasetRepository
from trace_platform.app import RunningPlatform, start_platform
from trace_platform.clients.dispatcher import DispatcherClient
from trace_platform.clients.query import QueryClient
from trace_platform.core.config import ObjectStoreSettings, Settings
from trace_platform.core.errors import Unavailable
from trace_platform.servers.query.attach import DatasetAttacher


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def _s3_settings(endpoint: str) -> ObjectStoreSettings:
    return ObjectStoreSettings(
        s3_endpoint_url=endpoint, s3_access_key_id="testing", s3_secret_access_key="testing", connect_timeout_seconds=1
    )


@pytest.fixture
async def s3_platform(settings: Settings, moto_endpoint: str) -> AsyncIterator[RunningPlatform]:
    running = await start_platform(replace(settings, object_store=_s3_settings(moto_endpoint)), migrate=False)
    yield running
    await running.stop(grace=0.5)


async def test_task_and_user_queries_over_an_s3_storage_ref(
    s3_platform: RunningPlatform, settings: Settings, moto_endpoint: str
) -> None:
    store = S3ObjectStore(_s3_settings(moto_endpoint))
    ds = write_dataset(store, "s3://trace-test/datasets", [blocks_table(500), blocks_table(500, 500)])
    assert ds.storage_ref.scheme == "s3" and ds.storage_ref.bucket == "trace-test"
    await DatasetRepository(s3_platform.pool).publish(ORG, "chain.blocks", ds.publication)
    async with grpc.aio.insecure_channel(s3_platform.addr) as ch:
        dispatcher = DispatcherClient(ch, worker_token=settings.worker_token, admin_token=settings.admin_token)
        ref, cap = await claim_with_grants(dispatcher, [ds.grant_pb])
        rows = await QueryClient(ch).task_query(
            cap, ref.task_id, ref.attempt, ds.dataset_uuid, "SELECT count(*), max(block_number) FROM dataset"
        )
        assert rows.rows == [[1000, 999]]
        user = await user_client(ch, settings)
        out = await user.query("chain.blocks", "SELECT miner FROM dataset WHERE block_number = 7")
        assert out.rows == [[f"0x{7:040x}"]]


async def test_store_down_is_unavailable_and_retryable(settings: Settings, moto_endpoint: str) -> None:
    store = S3ObjectStore(_s3_settings(moto_endpoint))
    ds = write_dataset(store, "s3://trace-test/down", [blocks_table(10)])
    dead = _s3_settings(f"http://127.0.0.1:{free_port()}")
    running = await start_platform(replace(settings, object_store=dead), migrate=False)
    try:
        await DatasetRepository(running.pool).publish(ORG, "chain.down", ds.publication)
        async with grpc.aio.insecure_channel(running.addr) as ch:
            with pytest.raises(Unavailable) as exc:
                await (await user_client(ch, settings)).query("chain.down", "SELECT count(*) FROM dataset")
            assert exc.value.reason == "OBJECT_STORE_UNAVAILABLE"
    finally:
        await running.stop(grace=0.5)


class CountingFileSystem(pafs.FileSystemHandler):
    """Wraps the local filesystem and counts the bytes the scanner reads."""

    def __init__(self) -> None:
        self.inner = pafs.LocalFileSystem()
        self.bytes_read = 0

    def reset(self) -> None:
        self.bytes_read = 0

    def open_input_file(self, path: str) -> pa.NativeFile:
        handler = self

        class Counting:
            def __init__(self) -> None:
                self.f = handler.inner.open_input_file(path)
                self.closed = False

            def read(self, n: int = -1) -> bytes:
                data: bytes = self.f.read(n) if n is not None and n >= 0 else self.f.read()
                handler.bytes_read += len(data)
                return data

            def seek(self, pos: int, whence: int = 0) -> int:
                return int(self.f.seek(pos, whence))

            def tell(self) -> int:
                return int(self.f.tell())

            def size(self) -> int:
                return int(self.f.size())

            def close(self) -> None:
                self.closed = True
                self.f.close()

            def readable(self) -> bool:
                return True

            def seekable(self) -> bool:
                return True

        return pa.PythonFile(Counting(), mode="r")

    # The rest delegates; the scanner only opens and reads files.
    def get_type_name(self) -> str:
        return "counting"

    def normalize_path(self, path: str) -> str:
        return str(self.inner.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self.inner.get_file_info(selector))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        raise NotImplementedError

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        raise NotImplementedError

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        raise NotImplementedError

    def move(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def copy_file(self, src: str, dest: str) -> None:
        raise NotImplementedError

    def open_output_stream(self, path: str, metadata: object = None) -> pa.NativeFile:
        return self.inner.open_output_stream(path)

    def open_append_stream(self, path: str, metadata: object = None) -> pa.NativeFile:
        raise NotImplementedError


async def test_projection_and_predicate_pushdown_read_a_fraction_of_the_bytes(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str
) -> None:
    # 200k rows in 20 row groups per file: a point lookup needs one row group of one
    # column group; a one-column scan needs one of three columns.
    ds = write_dataset(local_store, objects_uri, [blocks_table(100_000), blocks_table(100_000, 100_000)])
    counting = CountingFileSystem()
    store = LocalObjectStore([settings.data_dir / "objects"], filesystem=pafs.PyFileSystem(counting))
    running = await start_platform(settings, migrate=False, stores=ObjectStores([store]))
    try:
        await DatasetRepository(running.pool).publish(ORG, "chain.blocks", ds.publication)
        async with grpc.aio.insecure_channel(running.addr) as ch:
            user = await user_client(ch, settings)
            await user.query("chain.blocks", "SELECT count(*) FROM dataset")  # attach + footers
            measured = {}
            for label, sql in {
                "all": "SELECT sum(block_number), sum(gas_used), count(DISTINCT miner) FROM dataset",
                "one_column": "SELECT sum(gas_used) FROM dataset",
                "point": "SELECT miner FROM dataset WHERE block_number = 123456",
            }.items():
                counting.reset()
                out = await user.query("chain.blocks", sql, limit=1)
                assert out.rows
                measured[label] = counting.bytes_read
            assert out.rows == [[f"0x{123456 % 97:040x}"]]
    finally:
        await running.stop(grace=0.5)
    print("bytes read", measured)
    assert measured["one_column"] < measured["all"] * 0.6, measured
    assert measured["point"] < measured["all"] * 0.2, measured


async def test_local_versions_get_pinned_databases_and_other_stores_do_not(
    settings: Settings, local_store: LocalObjectStore, objects_uri: str
) -> None:
    """Plain local files are read natively by a database pinned to their directory; a store
    whose reads must all be seen (a wrapped filesystem here, S3 in production) is not."""
    ds = write_dataset(local_store, objects_uri, [blocks_table(10)])
    plain = await DatasetAttacher(ObjectStores([local_store])).attach(
        ds.dataset_uuid, ds.dataset_version, ds.storage_ref, None
    )
    assert plain.pinned is not None
    assert plain.pinned.directories == (ds.storage_ref.uri().removeprefix("file://"),)
    assert [p.rsplit("/", 1)[1] for p in plain.pinned.paths] == ["part-0.parquet"]
    wrapped = LocalObjectStore([settings.data_dir / "objects"], filesystem=pafs.PyFileSystem(CountingFileSystem()))
    attached = await DatasetAttacher(ObjectStores([wrapped])).attach(
        ds.dataset_uuid, ds.dataset_version, ds.storage_ref, None
    )
    assert attached.pinned is None and attached.objects
