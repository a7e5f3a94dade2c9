"""The rendered NetworkPolicy egress of one pod, as an nftables ruleset for the network
namespace that stands in for that pod (the run-time half of S1: tests/deploy/test_s1_netns).

Invariant: the ruleset admits no more than the policies do. Output is dropped unless a
rule admits it; replies of admitted connections (and of connections made *to* the pod)
pass as established/related; loopback passes because it never leaves the pod (Kubernetes
does not apply NetworkPolicies to a pod's own ``lo``, and in a netns ``lo`` reaches only
the namespace itself). An ipBlock becomes its CIDR less its ``except``s (netpol's own
arithmetic); a pod or namespace selector becomes the addresses the caller resolved for
it, and a selector nothing resolves admits nothing (reported in ``unresolved``). What
cannot be translated faithfully is refused: named ports, ``endPort`` ranges, and a rule
without ``to`` (every address) unless ``allow_anywhere`` is given, in which case it is
translated as every address and flagged.

Lives beside netpol.py because it is built on its evaluator (egress_peers, allowed_networks,
selects); it is a test and verification tool, not something the platform runs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.deploy.netpol import Network, Obj, Peer, Pod, Port, allowed_networks, egress_peers, selecting, selects

TABLE = "trace_s1"
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


class UntranslatableError(ValueError):
    """The policy says something this translation cannot state exactly in nftables."""


@dataclass(frozen=True)
class Resolved:
    """Pods a selector may match, stood in for by addresses: ``labels`` are the pods',
    ``namespace_labels`` their namespace's (None: the policy's own namespace)."""

    labels: Mapping[str, str]
    addresses: tuple[str, ...]
    namespace_labels: Mapping[str, str] | None = None

    def matches(self, peer: Peer) -> bool:
        if peer.pod_selector is None and peer.namespace_selector is None:
            return False
        pods_ok = peer.pod_selector is None or selects(peer.pod_selector, self.labels)
        if peer.namespace_selector is None:
            return pods_ok and self.namespace_labels is None
        return pods_ok and self.namespace_labels is not None and selects(peer.namespace_selector, self.namespace_labels)


@dataclass
class Translation:
    ruleset: str
    rules: list[str] = field(default_factory=list)  # the accept rules, one per line
    flags: list[str] = field(default_factory=list)  # faithful but wide: a human must look
    unresolved: list[str] = field(default_factory=list)  # selector peers that admit nothing here


def _ports(peer: Peer) -> list[str]:
    """nftables matches for the peer's ports; [""] for every port of every protocol."""
    if not peer.ports:
        return [""]
    out = []
    for port in peer.ports:
        proto = PROTOCOLS.get(port.protocol.upper())
        if proto is None:
            raise UntranslatableError(f"protocol {port.protocol!r} ({peer.describe()})")
        if port.port is None:
            out.append(f"meta l4proto {proto}")
        elif isinstance(port.port, int) or (isinstance(port.port, str) and port.port.isdigit()):
            out.append(f"{proto} dport {int(port.port)}")
        else:
            raise UntranslatableError(f"named port {port.port!r} needs the pod spec ({peer.describe()})")
    return out


def _networks(peer: Peer, resolved: Sequence[Resolved], out: Translation, allow_anywhere: bool) -> list[Network]:
    if peer.anywhere:
        if not allow_anywhere:
            raise UntranslatableError(f"a rule without `to` admits every address ({peer.describe()})")
        out.flags.append(f"every address: {peer.describe()}")
        return allowed_networks(peer)
    if peer.ip_block is not None:
        return allowed_networks(peer)
    found = [ipaddress.ip_network(a, strict=False) for r in resolved if r.matches(peer) for a in r.addresses]
    if not found:
        out.unresolved.append(peer.describe())
    return found


def _no_end_ports(policies: Iterable[Obj]) -> None:
    # netpol.Port does not carry endPort; translating its first port alone would be narrower
    # than the policy, and silently so: refuse instead.
    for policy in policies:
        for rule in policy["spec"].get("egress") or []:
            for port in rule.get("ports") or []:
                if "endPort" in port:
                    raise UntranslatableError(f"endPort range in {policy['metadata']['name']}")


def translate(
    objects: list[Obj], pod: Pod, resolved: Sequence[Resolved] = (), *, allow_anywhere: bool = False
) -> Translation:
    """The nftables ruleset (an ``inet`` table, ``nft -f`` input) for the pod's egress."""
    peers = egress_peers(objects, pod)
    if peers is None:
        raise UntranslatableError(f"{pod.workload}: egress is not isolated, nothing to translate")
    _no_end_ports(selecting(objects, pod, "Egress"))
    out = Translation("")
    for peer in peers:
        for net in _networks(peer, resolved, out, allow_anywhere):
            family = "ip" if net.version == 4 else "ip6"
            for match in _ports(peer):
                rule = f"{family} daddr {net} {match}".rstrip() + " accept"
                if rule not in out.rules:
                    out.rules.append(rule)
    body = "\n".join(f"    {r}" for r in out.rules)
    out.ruleset = (
        f"table inet {TABLE} {{\n"
        "  chain output {\n"
        "    type filter hook output priority filter; policy drop;\n"
        "    ct state established,related accept\n"
        '    oif "lo" accept\n'
        f"{body}\n"
        "  }\n"
        "}\n"
    )
    return out


__all__ = ["Port", "Resolved", "Translation", "UntranslatableError", "translate"]
