"""The udf operator's reading of a UDF's answer: a table, or the UDF's own failure."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.core.udf_output import MAX_COLUMNS, MAX_ROWS, udf_table
from trace_platform.workers.udf import _config

UUID = "00000000-0000-0000-0000-000000000001"


def test_columns_and_rows_become_a_table() -> None:
    t = udf_table(json.dumps({"columns": ["block_number", "v"], "rows": [[1, 2.5], [2, None]]}))
    assert t.column_names == ["block_number", "v"] and t.num_rows == 2
    assert t.column("v").to_pylist() == [2.5, None]
    assert t.schema.field("block_number").type == pa.int64()


def test_records_become_a_table_with_one_type_per_column() -> None:
    t = udf_table(json.dumps([{"a": 1, "b": "x", "c": True, "d": None}, {"a": 2.5, "b": None, "c": False, "d": None}]))
    assert t.column_names == ["a", "b", "c", "d"]
    assert [f.type for f in t.schema] == [pa.float64(), pa.string(), pa.bool_(), pa.string()]
    assert t.column("a").to_pylist() == [1.0, 2.5]


def test_an_empty_result_keeps_its_columns() -> None:
    t = udf_table(json.dumps({"columns": ["a", "b"], "rows": []}))
    assert t.num_rows == 0 and t.column_names == ["a", "b"]


def test_declared_types_fix_the_schema_of_an_empty_or_null_column() -> None:
    t = udf_table(json.dumps({"columns": ["a", "b"], "types": ["bigint", "DOUBLE"], "rows": []}))
    assert [f.type for f in t.schema] == [pa.int64(), pa.float64()]
    t = udf_table(json.dumps({"columns": ["a", "b"], "types": ["BIGINT", "DOUBLE"], "rows": [[None, 1], [2, 2.5]]}))
    assert [f.type for f in t.schema] == [pa.int64(), pa.float64()] and t.column("b").to_pylist() == [1.0, 2.5]


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps({"columns": ["a"], "types": ["BIGINT"], "rows": [[1.5]]}),  # not what was declared
        json.dumps({"columns": ["a"], "types": ["VARCHAR"], "rows": [[1]]}),
        json.dumps({"columns": ["a"], "types": ["BIGINT", "BIGINT"], "rows": []}),
        json.dumps({"columns": ["a"], "types": ["DECIMAL"], "rows": []}),
        json.dumps({"columns": ["a"], "types": "BIGINT", "rows": []}),
        "not json",
        json.dumps([1, 2]),
        json.dumps([]),  # records that name no columns
        json.dumps({"columns": [], "rows": []}),
        json.dumps({"columns": ["a", "a"], "rows": []}),
        json.dumps({"columns": ["a", "A"], "rows": []}),  # SQL folds case
        json.dumps({"columns": ["a b"], "rows": []}),  # not an identifier
        json.dumps({"columns": [1], "rows": []}),
        json.dumps({"columns": ["a"], "rows": [[1, 2]]}),
        json.dumps({"columns": ["a"], "rows": [1]}),
        json.dumps({"columns": ["a"], "rows": [[1], ["x"]]}),  # mixed types
        json.dumps({"columns": ["a"], "rows": [[True], [1]]}),  # a bool is no integer
        json.dumps({"columns": ["a"], "rows": [[[1]]]}),  # nested
        json.dumps({"columns": ["a"], "rows": [[{"x": 1}]]}),
        json.dumps({"columns": ["a"], "rows": [[2**63]]}),  # beyond int64
        '{"columns": ["a"], "rows": [[NaN]]}',
        json.dumps({"columns": ["a"], "rows": [["x" * 70_000]]}),
        json.dumps({"columns": ["a"]}),
        json.dumps({"columns": ["a"], "rows": [], "extra": 1}),
        json.dumps([{"a": 1}, {"b": 1}]),  # records disagree
        json.dumps({"columns": [f"c{i}" for i in range(MAX_COLUMNS + 1)], "rows": []}),
        json.dumps({"columns": ["a"], "rows": [[1]] * (MAX_ROWS + 1)}),
        json.dumps("rows"),
    ],
)
def test_anything_else_is_the_udfs_failure(answer: str) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        udf_table(answer)
    assert exc.value.reason == "UDF_RESULT_INVALID" and exc.value.metadata.get("category") == "udf"


def test_a_refusal_names_the_column_never_the_value() -> None:
    with pytest.raises(FailedPrecondition) as exc:
        udf_table(json.dumps({"columns": ["amount"], "rows": [[1], ["secret-ish"]]}))
    assert "amount" in str(exc.value) and "secret-ish" not in str(exc.value)


def test_a_config_without_its_output_is_refused() -> None:
    with pytest.raises(InvalidArgument) as exc:
        _config({"bundle_url": "file:///b.zip", "inputs": [{"dataset_uuid": "x"}]})
    assert exc.value.reason == "UDF_CONFIG"


@pytest.mark.parametrize(
    "inputs",
    [
        [],
        [{"relation": "a", "dataset_uuid": UUID}, {"relation": "a", "dataset_uuid": UUID}],
        [{"relation": "a;drop", "dataset_uuid": UUID}],
        [{"relation": "a", "dataset_uuid": "not-a-uuid"}],
    ],
)
def test_inputs_are_one_to_sixteen_distinct_relations(inputs: list[dict[str, str]]) -> None:
    output = {"dataset_uuid": UUID, "dataset_version": UUID}
    with pytest.raises(InvalidArgument) as exc:
        _config({"bundle_url": "file:///b.zip", "inputs": inputs, "output": output})
    assert exc.value.reason in ("UDF_CONFIG", "INVALID_UUID")


def test_several_inputs_are_accepted() -> None:
    output = {"dataset_uuid": UUID, "dataset_version": UUID}
    inputs = [{"relation": "txs", "dataset_uuid": UUID}, {"relation": "logs", "dataset_uuid": UUID}]
    _, _, sources, out = _config({"bundle_url": "file:///b.zip", "inputs": inputs, "output": output})
    assert [s["relation"] for s in sources] == ["txs", "logs"] and out == output
