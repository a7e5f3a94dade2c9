"""The NetworkPolicy -> nftables translation (tests/deploy/nft.py): each kind of rule, and
that what cannot be said exactly is refused rather than widened or silently narrowed.
Policies are written out by hand here; the rendered chart's goes through it in
tests/deploy/test_s1_netns.py. Every ruleset is also checked by `nft -c` where nft exists."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest

from tests.deploy.netpol import Pod
from tests.deploy.nft import Resolved, UntranslatableError, translate

POD = Pod("Deployment/q", "trace", {"app": "query"})
DENY_ALL = {
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny", "namespace": "trace"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
}


def policy(*egress: dict[str, Any], namespace: str = "trace") -> list[dict[str, Any]]:
    allow = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "query"}}, "policyTypes": ["Egress"], "egress": list(egress)},
    }
    return [DENY_ALL, allow]


def accepts(objects: list[dict[str, Any]], *resolved: Resolved, **kw: Any) -> list[str]:
    out = translate(objects, POD, resolved, **kw)
    if shutil.which("nft"):
        subprocess.run(["nft", "-c", "-f", "-"], input=out.ruleset.encode(), check=True)
    assert "policy drop;" in out.ruleset and "ct state established,related accept" in out.ruleset
    return out.rules


def test_no_rule_is_drop_only() -> None:
    assert accepts([DENY_ALL]) == []
    out = translate([DENY_ALL], POD)
    assert 'oif "lo" accept' in out.ruleset and "daddr" not in out.ruleset


def test_unisolated_pod_is_refused() -> None:
    with pytest.raises(UntranslatableError, match="not isolated"):
        translate([], POD)


def test_cidr_minus_except_and_ports() -> None:
    rules = accepts(
        policy({"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25"]}}],
                "ports": [{"port": 443, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]})
    )
    assert rules == ["ip daddr 10.0.0.0/25 tcp dport 443 accept", "ip daddr 10.0.0.0/25 udp dport 53 accept"]


def test_except_in_the_middle_splits_the_block() -> None:
    rules = accepts(policy({"to": [{"ipBlock": {"cidr": "10.0.0.0/30", "except": ["10.0.0.1/32"]}}],
                            "ports": [{"port": 5432}]}))
    # The default protocol is TCP; 10.0.0.1 is gone, its neighbours stay.
    assert sorted(rules) == sorted(
        ["ip daddr 10.0.0.0/32 tcp dport 5432 accept", "ip daddr 10.0.0.2/31 tcp dport 5432 accept"]
    )


def test_protocols_without_port_and_without_ports() -> None:
    rules = accepts(policy({"to": [{"ipBlock": {"cidr": "192.0.2.7/32"}}], "ports": [{"protocol": "SCTP"}]},
                           {"to": [{"ipBlock": {"cidr": "2001:db8::/64"}}]}))
    assert rules == ["ip daddr 192.0.2.7/32 meta l4proto sctp accept", "ip6 daddr 2001:db8::/64 accept"]


def test_selectors_resolve_to_given_addresses_only() -> None:
    objects = policy(
        {"to": [{"podSelector": {"matchLabels": {"role": "dispatcher"}}}], "ports": [{"port": 50051}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"ns": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"port": 53, "protocol": "UDP"}]},
    )
    dispatcher = Resolved({"role": "dispatcher", "extra": "x"}, ("10.199.0.1",))
    other = Resolved({"role": "sink"}, ("10.199.0.9",))
    dns_in_own_ns = Resolved({"k8s-app": "kube-dns"}, ("10.199.0.10",))  # wrong namespace: no match
    out = translate(objects, POD, [dispatcher, other, dns_in_own_ns])
    assert out.rules == ["ip daddr 10.199.0.1/32 tcp dport 50051 accept"]
    assert len(out.unresolved) == 1 and "kube-dns" in out.unresolved[0]
    dns = Resolved({"k8s-app": "kube-dns"}, ("10.199.0.10",), namespace_labels={"ns": "kube-system"})
    assert accepts(objects, dispatcher, dns)[-1] == "ip daddr 10.199.0.10/32 udp dport 53 accept"


def test_rule_without_to_is_refused_or_flagged() -> None:
    objects = policy({"ports": [{"port": 443}]})
    with pytest.raises(UntranslatableError, match="every address"):
        translate(objects, POD)
    out = translate(objects, POD, allow_anywhere=True)
    assert out.rules == ["ip daddr 0.0.0.0/0 tcp dport 443 accept", "ip6 daddr ::/0 tcp dport 443 accept"]
    assert out.flags and "every address" in out.flags[0]


@pytest.mark.parametrize(
    "port", [{"port": "grpc"}, {"port": 8000, "endPort": 8100}, {"port": 1, "protocol": "ICMP"}]
)
def test_what_cannot_be_said_exactly_is_refused(port: dict[str, Any]) -> None:
    with pytest.raises(UntranslatableError):
        translate(policy({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [port]}), POD)


def test_policies_of_other_pods_and_namespaces_are_ignored() -> None:
    assert accepts([DENY_ALL, *policy({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}, namespace="other")[1:]]) == []
