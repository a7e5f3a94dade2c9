"""Rendered objects per value set, rendered once per session (rendering is ~0.1 s, but
the tests mutate copies, never these)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.chart import merged_values, render, value_set

Rendered = tuple[dict[str, Any], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def rendered_sets() -> dict[str, Rendered]:
    return {name: (merged_values(value_set(name)), render(value_set(name))) for name in ("kind", "eks")}


@pytest.fixture(params=["kind", "eks"])
def rendered(request: pytest.FixtureRequest, rendered_sets: dict[str, Rendered]) -> Rendered:
    values, objects = rendered_sets[request.param]
    return values, copy.deepcopy(objects)


@pytest.fixture
def render_with() -> Callable[..., Rendered]:
    def _render(name: str, overrides: dict[str, Any]) -> Rendered:
        values = value_set(name, overrides)
        return merged_values(values), render(values)

    return _render
