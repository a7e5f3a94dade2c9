"""S1 proven on the rendered chart: default deny for every pod in both directions, the
Query Service's egress only to DNS, the object store, PostgreSQL, STS and the Dispatcher,
UDF runners only to the Dispatcher and the Query Service, and the internet only from
delivery and the RPC egress path. The negative tests mutate rendered policies and check
that the checks catch each kind of widening."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy import allowlist
from tests.deploy.netpol import (
    allowed_networks,
    default_deny_gaps,
    egress_outside,
    egress_peers,
    internet_roles,
    internet_rule_leaks,
    pods,
    selects,
)

Objects = list[dict[str, Any]]
Rendered = tuple[dict[str, Any], Objects]


def policy(objects: Objects, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == name)


def query_violations(values: dict[str, Any], objects: Objects) -> list[str]:
    """The allowlist, plus the absolute rule: nothing as wide as 0.0.0.0/0 (or any /0-/7),
    even if someone configured it as an 'object store'."""
    violations = egress_outside(objects, "query", allowlist.query(values))
    for pod in pods(objects):
        if pod.component != "query":
            continue
        for peer in egress_peers(objects, pod) or []:
            if any(net.prefixlen < 8 for net in allowed_networks(peer)):
                violations.append(f"query egress {peer.describe()} is internet-wide")
    return violations


def test_every_pod_is_under_default_deny(rendered: Rendered) -> None:
    _, objects = rendered
    assert len(pods(objects)) >= 6
    assert default_deny_gaps(objects) == []


def test_query_egress_is_only_the_allowlist(rendered: Rendered) -> None:
    values, objects = rendered
    assert query_violations(values, objects) == []
    # And it is not vacuous: the query pods are isolated and reach exactly these kinds.
    pod = next(p for p in pods(objects) if p.component == "query")
    peers = egress_peers(objects, pod)
    assert peers is not None and peers


def test_invoker_egress_is_only_dispatcher_query_and_the_bundle_store(render_with: Callable[..., Rendered]) -> None:
    # EKS runs UDFs in Lambda; turn the invoker on there too so both value sets are proven.
    for name in ("kind", "eks"):
        values, objects = render_with(name, {"roles": {"invoker": {"enabled": True}}})
        assert egress_outside(objects, "invoker", allowlist.invoker(values)) == []


def test_only_delivery_and_rpc_egress_reach_the_internet(rendered: Rendered) -> None:
    values, objects = rendered
    reaching = internet_roles(objects, allowlist.configured_endpoints(values))
    enabled = {p.component for p in pods(objects)}
    assert set(reaching) == allowlist.INTERNET_ROLES & enabled
    assert internet_rule_leaks(objects) == []


def test_api_role_when_enabled_is_fenced(render_with: Callable[..., Rendered]) -> None:
    values, objects = render_with("eks", {"roles": {"api": {"enabled": True}}})
    assert "api" in {p.component for p in pods(objects)}
    assert default_deny_gaps(objects) == []
    assert "api" not in internet_roles(objects, allowlist.configured_endpoints(values))


# --- negative tests: each mutation widens a rendered policy; the checks must catch it.

def _add_query_rule(objects: Objects, rule: dict[str, Any]) -> None:
    policy(objects, "trace-query")["spec"]["egress"].append(rule)


QUERY_WIDENINGS: dict[str, dict[str, Any]] = {
    "0.0.0.0/0": {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
    "0.0.0.0/0 on 443": {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
        "ports": [{"port": 443}],
    },
    "rule without to": {"ports": [{"protocol": "TCP", "port": 443}]},
    "public host": {"to": [{"ipBlock": {"cidr": "8.8.8.8/32"}}], "ports": [{"port": 53, "protocol": "UDP"}]},
    "private range outside config": {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 5432}]},
    "every pod in namespace": {"to": [{"podSelector": {}}], "ports": [{"port": 50051}]},
    "every namespace": {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
    "worker pods": {"to": [{"podSelector": {"matchLabels": allowlist.role_labels("worker")}}],
                    "ports": [{"port": 50051}]},
    "dispatcher on every port": {"to": [{"podSelector": {"matchLabels": allowlist.role_labels("dispatcher")}}]},
}


@pytest.mark.parametrize("mutation", sorted(QUERY_WIDENINGS))
def test_checker_catches_query_egress_widening(rendered: Rendered, mutation: str) -> None:
    values, objects = rendered
    _add_query_rule(objects, copy.deepcopy(QUERY_WIDENINGS[mutation]))
    assert query_violations(values, objects), f"{mutation} was not caught"


def test_checker_catches_an_extra_policy_opening_query(rendered: Rendered) -> None:
    """Policies add up: a second policy that selects the query pods widens them too."""
    values, objects = rendered
    objects.append({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "sneaky"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/component": "query"}},
                 "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    })
    assert query_violations(values, objects)
    assert "query" in internet_roles(objects, allowlist.configured_endpoints(values))


def test_checker_catches_0_0_0_0_configured_as_object_store(render_with: Callable[..., Rendered]) -> None:
    values, objects = render_with("kind", {"network": {"objectStore": {"cidrs": ["0.0.0.0/0"]}}})
    assert any("internet-wide" in v for v in query_violations(values, objects))


def test_checker_catches_missing_default_deny(rendered: Rendered) -> None:
    _, pristine = rendered
    objects = copy.deepcopy(pristine)
    objects.remove(policy(objects, "trace-default-deny"))
    assert default_deny_gaps(objects)
    objects = copy.deepcopy(pristine)
    deny = policy(objects, "trace-default-deny")
    deny["spec"]["policyTypes"] = ["Ingress"]
    assert any("Egress" in gap for gap in default_deny_gaps(objects))


def test_checker_catches_default_deny_that_allows(rendered: Rendered) -> None:
    _, objects = rendered
    policy(objects, "trace-default-deny")["spec"]["egress"] = [{}]
    assert default_deny_gaps(objects)


def test_checker_catches_invoker_reaching_postgres(render_with: Callable[..., Rendered]) -> None:
    values, objects = render_with("kind", {})
    policy(objects, "trace-invoker")["spec"]["egress"].append(
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}}}], "ports": [{"port": 5432}]}
    )
    assert egress_outside(objects, "invoker", allowlist.invoker(values))


def test_checker_catches_internet_for_sink_and_metadata_leaks(rendered: Rendered) -> None:
    values, objects = rendered
    policy(objects, "trace-sink")["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    reaching = internet_roles(objects, allowlist.configured_endpoints(values))
    assert "sink" in reaching and set(reaching) != allowlist.INTERNET_ROLES
    assert internet_rule_leaks(objects)  # 0.0.0.0/0 without excepts admits 169.254.169.254 and 10/8


def ingress_peers(objects: Objects, component: str) -> list[tuple[Any, Any]]:
    """(from peer, ports) of every ingress rule selecting the component's pods."""
    pod = next(p for p in pods(objects) if p.component == component)
    out = []
    for pol in objects:
        if pol["kind"] != "NetworkPolicy" or not selects(pol["spec"].get("podSelector"), pod.labels):
            continue
        for rule in pol["spec"].get("ingress") or []:
            for peer in rule.get("from") or [None]:
                out.append((peer, rule.get("ports")))
    return out


def test_ingress_only_from_callers_scrapers_and_configured_clients(render_with: Callable[..., Rendered]) -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
               "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    values, objects = render_with("kind", {"metrics": {"enabled": True, "scrapers": [scraper]}})
    callers = {"invoker": {"worker"}, "query": {"invoker", "worker"}, "delivery": set(), "worker": set()}
    for component, expected in callers.items():
        peers = ingress_peers(objects, component)
        assert all(peer is not None and ports for peer, ports in peers), component  # no open `from`/ports
        grpc = [p for p, ports in peers if ports == [{"protocol": "TCP", "port": values["grpcPort"]}]]
        metrics = [p for p, ports in peers if ports == [{"protocol": "TCP", "port": values["metrics"]["port"]}]]
        assert len(grpc) + len(metrics) == len(peers), component
        assert metrics == [scraper], component
        assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in grpc} == expected
    # The metrics port is where TRACE_METRICS_LISTEN points, and the egress proofs still hold.
    config = next(o for o in objects if o["kind"] == "ConfigMap")
    assert config["data"]["TRACE_METRICS_LISTEN"] == f"0.0.0.0:{values['metrics']['port']}"
    assert query_violations(values, objects) == [] and default_deny_gaps(objects) == []
