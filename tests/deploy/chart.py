"""Renders deploy/helm/trace offline (helm-python-sdk: Helm's Go SDK in a bundled shared
library, no helm binary, no cluster) and validates the objects against the Kubernetes
OpenAPI schemas that kubernetes-validate ships.

`python -m tests.deploy.chart kind|eks` prints the rendered manifests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "trace"
VALUE_SETS = {"kind": CHART / "values-kind.yaml", "eks": CHART / "values-eks.yaml"}
RELEASE = "trace"
NAMESPACE = "trace"
# The oldest Kubernetes minor we claim (EKS standard support) and the newest shipped schemas.
KUBERNETES_VERSIONS = ("1.31.0", "1.35.0")

Obj = dict[str, Any]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's own merge of -f files: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def value_set(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    values = yaml.safe_load(VALUE_SETS[name].read_text()) or {}
    return deep_merge(values, overrides or {})


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    """The values an install would really use (chart defaults under the given set)."""
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        merged: dict[str, Any] = chart.merge_values(values)
    return merged


def render(values: dict[str, Any]) -> list[Obj]:
    """Every object the chart renders for ``values``, in template order."""
    import helm_python

    with helm_python.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[Obj] = []
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(manifests[path]) if doc)
    return objects


def schema_errors(objects: list[Obj], version: str) -> list[str]:
    """Strict schema validation (unknown fields are errors); one line per bad object."""
    import kubernetes_validate

    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    return errors


if __name__ == "__main__":
    print(yaml.safe_dump_all(render(value_set(sys.argv[1] if len(sys.argv) > 1 else "kind")), sort_keys=False))
