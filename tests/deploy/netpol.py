"""A small evaluator of rendered Kubernetes NetworkPolicies, and the S1 checks over it.

It follows the API's semantics, not the chart's templates: a pod is isolated in a
direction once any policy selecting it lists that direction; what it may then reach is
the union of the rules of every policy selecting it; a rule without ``to`` reaches every
address, without ``ports`` every port; ``podSelector: {}`` is every pod. Each check
returns violations as sentences (empty means proven), so a negative test can mutate a
rendered policy and see the check catch it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses that are not the internet: RFC 1918, CGNAT, link-local (metadata), loopback.
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.168.0.0/16", "::1/128", "fc00::/7", "fe80::/10",
    )
)
METADATA = ipaddress.ip_network("169.254.169.254/32")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet")


@dataclass(frozen=True)
class Pod:
    """The pods of one workload: what policies select on."""

    workload: str
    namespace: str
    labels: Mapping[str, str]

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")


@dataclass(frozen=True)
class Port:
    protocol: str
    port: int | str | None  # None: every port


@dataclass
class Peer:
    """One destination of an egress rule with the ports that rule opens to it."""

    ip_block: dict[str, Any] | None = None
    pod_selector: dict[str, Any] | None = None
    namespace_selector: dict[str, Any] | None = None
    anywhere: bool = False
    ports: list[Port] = field(default_factory=list)  # empty: every port, every protocol
    policy: str = ""

    def describe(self) -> str:
        if self.anywhere:
            what = "every address (rule without `to`)"
        elif self.ip_block is not None:
            what = f"ipBlock {self.ip_block.get('cidr')} except {self.ip_block.get('except', [])}"
        else:
            what = f"pods {self.pod_selector} in namespaces {self.namespace_selector}"
        ports = ",".join(f"{p.protocol}/{p.port or '*'}" for p in self.ports) or "all ports"
        return f"{what} on {ports} (policy {self.policy})"


def pods(objects: Iterable[Obj]) -> list[Pod]:
    found = []
    for obj in objects:
        if obj.get("kind") in WORKLOADS:
            labels = obj["spec"]["template"]["metadata"].get("labels", {})
            namespace = obj.get("metadata", {}).get("namespace", "")
            found.append(Pod(f"{obj['kind']}/{obj['metadata']['name']}", namespace, labels))
    return found


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector against labels (``{}`` selects everything, ``None`` nothing)."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def policies(objects: Iterable[Obj]) -> list[Obj]:
    return [o for o in objects if o.get("kind") == "NetworkPolicy"]


def policy_types(policy: Obj) -> set[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if "egress" in spec else {"Ingress"}


def selecting(objects: Iterable[Obj], pod: Pod, direction: str) -> list[Obj]:
    return [
        p
        for p in policies(objects)
        if p.get("metadata", {}).get("namespace", "") == pod.namespace
        and direction in policy_types(p)
        and selects(p["spec"].get("podSelector"), pod.labels)
    ]


def egress_peers(objects: Iterable[Obj], pod: Pod) -> list[Peer] | None:
    """Every destination the pod's egress allows; None when egress is not isolated at all."""
    selected = selecting(list(objects), pod, "Egress")
    if not selected:
        return None
    peers = []
    for policy in selected:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress") or []:
            ports = [Port(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports") or []]
            targets = rule.get("to")
            if not targets:
                peers.append(Peer(anywhere=True, ports=ports, policy=name))
                continue
            for peer in targets:
                peers.append(
                    Peer(
                        ip_block=peer.get("ipBlock"),
                        pod_selector=peer.get("podSelector"),
                        namespace_selector=peer.get("namespaceSelector"),
                        ports=ports,
                        policy=name,
                    )
                )
    return peers


def subtract(networks: list[Network], holes: Iterable[Network]) -> list[Network]:
    for hole in holes:
        rest: list[Network] = []
        for net in networks:
            if net.version != hole.version or not net.overlaps(hole):
                rest.append(net)
            elif net.subnet_of(hole):  # type: ignore[arg-type]
                continue
            else:
                rest.extend(net.address_exclude(hole))  # type: ignore[arg-type]
        networks = rest
    return networks


def allowed_networks(peer: Peer) -> list[Network]:
    """The addresses a peer admits (its cidr less its excepts); all of them for `anywhere`."""
    if peer.anywhere:
        return [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    if peer.ip_block is None:
        return []
    cidr = ipaddress.ip_network(peer.ip_block["cidr"], strict=False)
    return subtract([cidr], (ipaddress.ip_network(e, strict=False) for e in peer.ip_block.get("except") or []))


def reaches_internet(peer: Peer, configured: Iterable[Network] = ()) -> bool:
    """True when the peer admits a public address other than the configured endpoints."""
    return bool(subtract(allowed_networks(peer), [*PRIVATE, *configured]))


@dataclass(frozen=True)
class Allowance:
    """One destination a role may reach: CIDRs, or pods (labels, optionally in a namespace
    with these labels), on these ports."""

    name: str
    ports: frozenset[Port]
    cidrs: tuple[Network, ...] = ()
    pod_labels: Mapping[str, str] | None = None
    namespace_labels: Mapping[str, str] | None = None

    def admits(self, peer: Peer) -> bool:
        if peer.anywhere or not peer.ports or not set(peer.ports) <= self.ports:
            return False
        if peer.ip_block is not None:
            return bool(self.cidrs) and all(
                any(net.version == c.version and net.subnet_of(c) for c in self.cidrs)  # type: ignore[arg-type]
                for net in allowed_networks(peer)
            )
        if self.pod_labels is None:
            return False
        # A peer admits at most what the allowance names: its selector must demand every label.
        if not _demands(peer.pod_selector, self.pod_labels):
            return False
        if self.namespace_labels is None:
            return peer.namespace_selector is None
        return _demands(peer.namespace_selector, self.namespace_labels)


def _demands(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None or not labels:
        return False
    match = selector.get("matchLabels") or {}
    return all(match.get(k) == v for k, v in labels.items())


def egress_outside(objects: list[Obj], component: str, allowances: Iterable[Allowance]) -> list[str]:
    """Violations: egress of the component's pods that no allowance admits (or no isolation)."""
    allowances = list(allowances)
    found = [p for p in pods(objects) if p.component == component]
    if not found:
        return [f"no pods of {component} rendered"]
    violations = []
    for pod in found:
        peers = egress_peers(objects, pod)
        if peers is None:
            violations.append(f"{pod.workload}: egress not isolated")
            continue
        for peer in peers:
            if not any(a.admits(peer) for a in allowances):
                violations.append(f"{pod.workload}: egress to {peer.describe()} is outside its allowlist")
    return violations


def default_deny_gaps(objects: list[Obj]) -> list[str]:
    """Violations: pods not under a policy that selects every pod and allows nothing, for
    both ingress and egress."""
    gaps = []
    for pod in pods(objects):
        for direction, rules in (("Ingress", "ingress"), ("Egress", "egress")):
            deny = [
                p
                for p in selecting(objects, pod, direction)
                if p["spec"].get("podSelector") == {} and not p["spec"].get(rules)
            ]
            if not deny:
                gaps.append(f"{pod.workload}: no default deny for {direction}")
    return gaps


def internet_roles(objects: list[Obj], configured: Iterable[Network] = ()) -> dict[str, list[str]]:
    """component -> the peers through which its pods reach the internet."""
    configured = list(configured)
    out: dict[str, list[str]] = {}
    for pod in pods(objects):
        for peer in egress_peers(objects, pod) or []:
            if reaches_internet(peer, configured):
                out.setdefault(pod.component, []).append(peer.describe())
    return out


def internet_rule_leaks(objects: list[Obj]) -> list[str]:
    """Violations: an internet peer that also admits private ranges or the metadata address."""
    leaks = []
    for pod in pods(objects):
        for peer in egress_peers(objects, pod) or []:
            nets = allowed_networks(peer)
            if any(n.version == 4 and n.overlaps(METADATA) for n in nets):
                leaks.append(f"{pod.workload}: {peer.describe()} admits the metadata address")
            private = any(n.version == p.version and n.overlaps(p) for n in nets for p in PRIVATE)  # type: ignore[arg-type]
            if reaches_internet(peer) and private:
                leaks.append(f"{pod.workload}: {peer.describe()} mixes the internet with private ranges")
    return leaks
