"""docs/configuration.md lists every settings variable, as the dataclasses declare it."""

from __future__ import annotations

import re
from pathlib import Path

from trace_platform.core import rpc_pools
from trace_platform.core.settings_doc import MEANINGS, rendered, table
from trace_platform.core.settings_env import OTHER_VARIABLES, all_names, variables

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_field_has_a_meaning_and_no_meaning_is_stale() -> None:
    paths = {v.path for v in variables()}
    missing = sorted(p for p in paths if not MEANINGS.get(p, "").strip())
    assert missing == [], f"add to core/settings_doc.py MEANINGS: {missing}"
    assert sorted(set(MEANINGS) - paths) == []


def test_the_checked_in_table_is_the_generated_one() -> None:
    text = DOC.read_text()
    assert rendered(text) == text, "docs/configuration.md is stale: run scripts/gen_config_doc.py"


def test_every_variable_and_older_name_is_in_the_doc() -> None:
    text = DOC.read_text()
    for var in variables():
        for name in var.names:
            assert f"`{name}`" in text, name
    assert table().count("\n") == len(variables()) + 1


def test_the_chart_sets_only_variables_that_exist() -> None:
    """A misspelt variable in the chart would stop its pods at start (unknown look-alike)."""
    known = {*all_names(), *OTHER_VARIABLES}
    chart = DOC.parents[1] / "deploy" / "helm" / "trace"
    used = {n for f in chart.rglob("*") if f.is_file() for n in re.findall(r"TRACE_[A-Z0-9_]*[A-Z0-9]", f.read_text())}
    assert len(used) > 10
    assert sorted(n for n in used - known if not n.startswith(rpc_pools.PREFIX)) == []
