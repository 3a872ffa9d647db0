"""What AccessPolicies declare, as a reachability model: the node tier compares it with real connections.

The model reads the AccessPolicy specs and the operator's namespace rules (default deny in both directions plus the
DNS allow in every namespace it enforces), not the NetworkPolicies the operator renders: a rendering bug and an
enforcement gap both show up as a disagreement.
"""

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from access_hygiene.models.policy import APP_LABEL, Peer, PortSpec, ResolvedPolicy

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Endpoint:
    """Something a probe connects to: a pod (namespace set) or an address outside the pod network."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)
    # (name, number, protocol) of the ports it serves; names are what named NetworkPolicy ports refer to.
    ports: tuple[tuple[str, int, str], ...] = ()

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


@dataclass(frozen=True)
class Flow:
    source: Endpoint
    target: Endpoint
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.source.name} -> {self.target.name}:{self.port}/{self.protocol}"


@dataclass
class DeclaredFlows:
    policies: Sequence[ResolvedPolicy]
    namespace_labels: Mapping[str, Mapping[str, str]]
    # Namespaces where the operator enforces default deny (both directions) with the DNS allow.
    hygiene_namespaces: frozenset[str]
    dns_namespace: str
    dns_labels: Mapping[str, str]
    api_server: tuple[str, int]
    operator_mode: str = "enforce"

    def _selecting(self, pod: Endpoint) -> list[ResolvedPolicy]:
        return [
            p
            for p in self.policies
            if p.spec.network is not None
            and (p.spec.mode or self.operator_mode) == "enforce"
            and p.namespace == pod.namespace
            and all(pod.labels.get(k) == v for k, v in p.pod_labels.items())
        ]

    def _peer_matches(self, peer: Peer, policy_namespace: str, endpoint: Endpoint) -> bool:
        if peer.ip_block is not None:
            address = ipaddress.ip_address(endpoint.ip)
            return address in ipaddress.ip_network(peer.ip_block.cidr, strict=False) and not any(
                address in ipaddress.ip_network(e, strict=False) for e in peer.ip_block.except_
            )
        if not endpoint.is_pod:
            return False
        namespace_labels = self.namespace_labels.get(endpoint.namespace or "", {})
        if peer.namespace:
            namespace_ok = endpoint.namespace == peer.namespace
        elif peer.namespace_selector is not None:
            namespace_ok = all(namespace_labels.get(k) == v for k, v in peer.namespace_selector.match_labels.items())
        else:
            namespace_ok = endpoint.namespace == policy_namespace
        if peer.app:
            pod_ok = endpoint.labels.get(APP_LABEL) == peer.app
        elif peer.pod_selector is not None:
            pod_ok = all(endpoint.labels.get(k) == v for k, v in peer.pod_selector.match_labels.items())
        else:
            pod_ok = True
        return namespace_ok and pod_ok

    @staticmethod
    def _ports_match(ports: Sequence[PortSpec], target: Endpoint, port: int, protocol: str) -> bool:
        if not ports:
            return True
        for spec in ports:
            if spec.protocol != protocol:
                continue
            if isinstance(spec.port, int):
                if spec.port == port or (spec.end_port is not None and spec.port <= port <= spec.end_port):
                    return True
            elif any(
                name == spec.port and number == port and proto == protocol for name, number, proto in target.ports
            ):
                return True
        return False

    def _dns(self, target: Endpoint, port: int, protocol: str) -> bool:
        return (
            target.namespace == self.dns_namespace
            and all(target.labels.get(k) == v for k, v in self.dns_labels.items())
            and port == 53
            and protocol in ("UDP", "TCP")
        )

    def egress_allowed(self, flow: Flow) -> bool:
        source, target = flow.source, flow.target
        policies = self._selecting(source)
        hygiene = source.namespace in self.hygiene_namespaces
        if not policies and not hygiene:
            return True
        # The namespace's DNS allow leaves out the pods of policies that turn DNS off (network.dns: false), when a
        # one-label selector can name them exactly (docs/rules.md, "Namespace enforcement").
        opted_out = any(p.spec.network and not p.spec.network.dns and len(p.pod_labels) == 1 for p in policies)
        dns_allowed = (hygiene and not opted_out) or any(p.spec.network and p.spec.network.dns for p in policies)
        if dns_allowed and self._dns(target, flow.port, flow.protocol):
            return True
        if any(p.spec.network and p.spec.network.kube_api_server for p in policies) and (
            (target.ip, flow.port) == self.api_server and flow.protocol == "TCP"
        ):
            return True
        return any(
            any(self._peer_matches(peer, p.namespace, target) for peer in rule.to)
            and self._ports_match(rule.ports, target, flow.port, flow.protocol)
            for p in policies
            for rule in (p.spec.network.egress if p.spec.network else [])
        )

    def ingress_allowed(self, flow: Flow) -> bool:
        source, target = flow.source, flow.target
        if not target.is_pod:
            return True
        policies = self._selecting(target)
        if not policies and target.namespace not in self.hygiene_namespaces:
            return True
        return any(
            any(self._peer_matches(peer, p.namespace, source) for peer in rule.from_)
            and self._ports_match(rule.ports, target, flow.port, flow.protocol)
            for p in policies
            for rule in (p.spec.network.ingress if p.spec.network else [])
        )

    def allowed(self, flow: Flow) -> bool:
        return self.egress_allowed(flow) and self.ingress_allowed(flow)


def all_flows(sources: Iterable[Endpoint], targets: Iterable[Endpoint]) -> list[Flow]:
    """Every source to every port of every other target."""
    targets = list(targets)
    return [
        Flow(source, target, number, protocol)
        for source in sources
        for target in targets
        if target.name != source.name
        for _, number, protocol in target.ports
    ]
