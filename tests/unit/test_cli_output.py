"""CLI output in the field's conventions (issue 14, items 6 and 7): 0x hex for binary,
int64 as JSON numbers, CSV/Parquet batch by batch, QueryArrow decoded as it arrives."""

from __future__ import annotations

import csv
import importlib
import io
import json
import pkgutil
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.protobuf.message import Message

import trace_platform.gen.trace.v1 as gen
from trace_platform.cli.query import render_json, render_table
from trace_platform.clients.api.query import QueryRows
from trace_platform.clients.arrow_stream import IpcStreamDecoder
from trace_platform.core.errors import Internal
from trace_platform.gen.trace.v1 import chain_sync_pb2
from trace_platform.views.output import BatchWriter, cell, dumps, message_dict

TX_HASH = bytes.fromhex("ab" * 32)
ADDRESS = bytes.fromhex("00ff" * 10)


def test_binary_values_print_as_0x_lowercase_hex() -> None:
    assert cell(TX_HASH) == "0x" + "ab" * 32
    assert cell(bytearray(b"\xde\xad")) == "0xdead"
    assert cell(b"") == "0x"
    assert cell(None) == "NULL"
    result = QueryRows(columns=[("hash", "BLOB"), ("n", "BIGINT")], rows=[[TX_HASH, 1], [None, 2]], truncated=False)
    table = render_table(result)
    assert "0x" + "ab" * 32 in table and "\\x" not in table
    doc = json.loads(render_json(result))
    assert doc["rows"] == [["0x" + "ab" * 32, 1], [None, 2]]


def _filled(message: Message, depth: int = 0) -> Message:
    """Every int64 field (and those of nested messages) set to 2**53 - 1 (repeated: twice)."""
    for field in message.DESCRIPTOR.fields:
        if field.is_repeated:
            if field.type in (3, 4, 6, 16, 18):
                getattr(message, field.name).extend([2**53 - 1, 1])
            elif field.type == 12:
                getattr(message, field.name).extend([b"\xab\xcd", b""])
            continue
        if field.type in (3, 4, 6, 16, 18):
            setattr(message, field.name, 2**53 - 1)
        elif field.type == 12:
            setattr(message, field.name, b"\xab\xcd")
        elif field.type == 11 and depth < 3 and not field.message_type.full_name.startswith("google.protobuf."):
            _filled(getattr(message, field.name), depth + 1)
    return message


def _strings_where_ints_belong(descriptor: Any, doc: dict[str, Any], path: str = "") -> list[str]:
    bad = []
    for field in descriptor.fields:
        if field.name not in doc:
            continue
        value = doc[field.name]
        if field.type in (3, 4, 6, 16, 18):
            values = value if isinstance(value, list) else [value]
            bad += [f"{path}{field.name}" for v in values if not isinstance(v, int)]
        elif field.type == 12:  # bytes: 0x hex, not base64
            values = value if isinstance(value, list) else [value]
            bad += [f"{path}{field.name}" for v in values if v not in ("0xabcd", "0x")]
        elif field.type == 11 and not field.message_type.full_name.startswith("google.protobuf."):
            if field.message_type.GetOptions().map_entry:
                continue
            for item in value if isinstance(value, list) else [value]:
                bad += _strings_where_ints_belong(field.message_type, item, f"{path}{field.name}.")
    return bad


def _all_messages() -> list[type[Message]]:
    classes = []
    for info in pkgutil.iter_modules(gen.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"{gen.__name__}.{info.name}")
            for descriptor in module.DESCRIPTOR.message_types_by_name.values():
                classes.append(getattr(module, descriptor.name))
    assert len(classes) > 30
    return classes


@pytest.mark.parametrize("cls", _all_messages(), ids=lambda c: c.DESCRIPTOR.full_name)
def test_int64_are_json_numbers_and_bytes_0x_hex_in_every_message(cls: type[Message]) -> None:
    message = _filled(cls())
    doc = message_dict(message)
    assert not _strings_where_ints_belong(cls.DESCRIPTOR, doc)
    assert json.loads(dumps(doc)) == doc


def test_chain_sync_status_numbers_survive_nesting_and_repetition() -> None:
    job = chain_sync_pb2.ChainSyncStatus(name="mini", chain_id=31337, from_block=0, to_block=2**40)
    job.streams.add(dataset_name="mini.blocks", cursor=2**40 - 1, completed_blocks=7, head_block=2**40)
    job.streams.add(dataset_name="mini.logs", cursor=3)
    doc = json.loads(dumps({"jobs": [message_dict(job)]}))["jobs"][0]
    assert (doc["chain_id"], doc["from_block"], doc["to_block"]) == (31337, 0, 2**40)
    assert [(s["cursor"], s["completed_blocks"]) for s in doc["streams"]] == [(2**40 - 1, 7), (3, 0)]
    assert doc["streams"][0]["head_block"] == 2**40 and "head_block" not in doc["streams"][1]


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "block_number": pa.array(range(n), pa.int64()),
            "hash": pa.array([i.to_bytes(32, "big") for i in range(n)], pa.binary()),
            "miner": pa.array([ADDRESS if i % 3 else None for i in range(n)], pa.binary(20)),
            "topics": pa.array([[f"t{i}"] for i in range(n)], pa.list_(pa.string())),
        }
    )


def test_csv_is_written_batch_by_batch_with_hex_and_json_cells() -> None:
    table = _table(250)
    sink = io.BytesIO()
    writer = BatchWriter("csv", sink)
    for batch in table.to_batches(max_chunksize=100):
        writer.write(batch)
    writer.close()
    rows = list(csv.DictReader(io.StringIO(sink.getvalue().decode())))
    assert writer.rows == len(rows) == 250
    assert rows[1] == {
        "block_number": "1",
        "hash": "0x" + (1).to_bytes(32, "big").hex(),
        "miner": "0x" + ADDRESS.hex(),
        "topics": '["t1"]',
    }
    assert rows[0]["miner"] == ""


def test_parquet_keeps_binary_and_every_row() -> None:
    table = _table(250)
    sink = io.BytesIO()
    writer = BatchWriter("parquet", sink)
    for batch in table.to_batches(max_chunksize=100):
        writer.write(batch)
    writer.close()
    back = pq.read_table(io.BytesIO(sink.getvalue()))
    assert back.equals(table)
    assert pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.num_row_groups == 3  # one per batch


def _ipc(table: pa.Table, chunk_rows: int) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=chunk_rows):
            writer.write_batch(batch)
    return sink.getvalue()


@pytest.mark.parametrize("step", [1, 13, 1000, 1 << 20])
def test_the_ipc_decoder_yields_batches_from_chunks_of_any_size(step: int) -> None:
    table = _table(300)
    data = _ipc(table, 100)
    decoder = IpcStreamDecoder()
    batches = [b for i in range(0, len(data), step) for b in decoder.feed(data[i : i + step])]
    assert decoder.finish() == table.schema
    assert len(batches) == 3 and pa.Table.from_batches(batches).equals(table)


def test_a_stream_cut_short_is_an_error_not_a_short_result() -> None:
    data = _ipc(_table(300), 100)
    for cut in (len(data) - 8, len(data) // 2, 10):
        decoder = IpcStreamDecoder()
        decoder.feed(data[:cut])
        with pytest.raises(Internal, match="end-of-stream marker"):
            decoder.finish()
