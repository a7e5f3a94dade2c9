"""The udf operator's reading of a UDF's answer: a table, or the UDF's own failure."""

from __future__ import annotations

import json

import pytest

from trace_platform.core.errors import FailedPrecondition, InvalidArgument
from trace_platform.workers.udf import _config, _table


def test_columns_and_rows_become_a_table() -> None:
    t = _table(json.dumps({"columns": ["block_number", "v"], "rows": [[1, 2.5], [2, None]]}))
    assert t.column_names == ["block_number", "v"] and t.num_rows == 2
    assert t.column("v").to_pylist() == [2.5, None]


@pytest.mark.parametrize(
    "answer",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"columns": [], "rows": []}),
        json.dumps({"columns": ["a", "a"], "rows": []}),
        json.dumps({"columns": ["a"], "rows": [[1, 2]]}),
        json.dumps({"columns": ["a"], "rows": [[1], ["x"]]}),  # mixed types: no column type
        json.dumps({"columns": ["a"]}),
    ],
)
def test_anything_else_is_the_udfs_failure(answer: str) -> None:
    with pytest.raises(FailedPrecondition) as exc:
        _table(answer)
    assert exc.value.reason == "UDF_RESULT_INVALID" and exc.value.metadata.get("category") == "udf"


def test_a_config_without_its_output_is_refused() -> None:
    with pytest.raises(InvalidArgument) as exc:
        _config({"bundle_url": "file:///b.zip", "inputs": [{"dataset_uuid": "x"}]})
    assert exc.value.reason == "UDF_CONFIG"
