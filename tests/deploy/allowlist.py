"""The S1 allowlist each role is held to, built from the merged chart values (what the
operator configured) and the chart's label convention, never from the rendered policies."""

from __future__ import annotations

import ipaddress
from typing import Any

from tests.deploy.chart import RELEASE
from tests.deploy.netpol import Allowance, Port

# Roles that may reach the internet: webhooks, and the RPC egress path (the dispatcher's
# chain_sync head observer and the worker's Cryo ranges call RPC providers).
INTERNET_ROLES = frozenset({"delivery", "dispatcher", "worker"})


def role_labels(role: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "trace",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/component": role,
    }


def dns(values: dict[str, Any]) -> Allowance:
    d = values["network"]["dns"]
    return Allowance(
        "dns",
        frozenset({Port("UDP", 53), Port("TCP", 53)}),
        pod_labels=d["podLabels"],
        namespace_labels={"kubernetes.io/metadata.name": d["namespace"]},
    )


def role(values: dict[str, Any], name: str) -> Allowance:
    return Allowance(f"role:{name}", frozenset({Port("TCP", values["grpcPort"])}), pod_labels=role_labels(name))


def block(values: dict[str, Any], name: str) -> Allowance:
    b = values["network"][name]
    return Allowance(
        name,
        frozenset(Port("TCP", p) for p in b.get("ports") or []),
        cidrs=tuple(ipaddress.ip_network(c, strict=False) for c in b.get("cidrs") or []),
        pod_labels=b.get("podSelector") or None,
    )


def query(values: dict[str, Any]) -> list[Allowance]:
    """DNS, the object store, PostgreSQL, STS (IRSA's token exchange) and the Dispatcher."""
    return [dns(values), block(values, "objectStore"), block(values, "postgres"), block(values, "sts"),
            role(values, "dispatcher")]


def invoker(values: dict[str, Any]) -> list[Allowance]:
    """UDF runners: the Dispatcher and the Query Service (and DNS to find them), and the
    object store, where the bundles they run are (TRACE_BUNDLES_URI, read-only by IAM)."""
    return [dns(values), block(values, "objectStore"), role(values, "dispatcher"), role(values, "query")]


def configured_endpoints(values: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Endpoint CIDRs the operator configured (S3 gateway prefixes may be public addresses)."""
    net = values["network"]
    return [ipaddress.ip_network(c, strict=False) for k in ("objectStore", "awsApis", "sts") for c in net[k]["cidrs"]]
