"""NetworkPolicy semantics: policy types, pod selection, isolation, default deny,
and whether a pod can reach the cluster DNS."""

import ipaddress
from collections.abc import Mapping
from typing import Any, Literal

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.selectors import selector_matches
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, generated_by_policy, labels_of, namespace_of
from access_hygiene.engine.ground.workloads import hygiene_index
from access_hygiene.render.namespace import NAMESPACE_NAME_LABEL


def policy_types(policy: Obj) -> list[str]:
    """spec.policyTypes, or its API default: Ingress, plus Egress when egress rules are present."""
    spec = policy.get("spec") or {}
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return [str(t) for t in declared]
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _selects_all(selector: Any) -> bool:
    return not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def policy_selects(policy: Obj, pod_labels: Mapping[str, str]) -> bool:
    selector = (policy.get("spec") or {}).get("podSelector")
    return selector_matches(selector if isinstance(selector, dict) else {}, pod_labels)


def is_default_deny(policy: Obj, direction: Literal["Ingress", "Egress"]) -> bool:
    """Selects every pod, isolates it for the direction and allows nothing in that direction."""
    spec = policy.get("spec") or {}
    rules = spec.get("ingress" if direction == "Ingress" else "egress")
    return _selects_all(spec.get("podSelector")) and direction in policy_types(policy) and not rules


def policies_in(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> list[Obj]:
    return list(hygiene_index(snapshot, ctx).policies.get(namespace, []))


def isolated(policies: list[Obj], pod_labels: Mapping[str, str], direction: str) -> bool:
    return any(direction in policy_types(p) and policy_selects(p, pod_labels) for p in policies)


def _port_allows_dns(port: Any) -> bool:
    if not isinstance(port, dict):
        return False
    if str(port.get("protocol") or "TCP") != "UDP":
        return False
    number = port.get("port")
    if number is None:  # all ports of that protocol
        return True
    if isinstance(number, str) and not number.isdigit():
        return number in ("dns", "domain")  # CoreDNS / kube-dns name their container ports so
    end = port.get("endPort")
    return int(number) == 53 or (isinstance(end, int) and int(number) <= 53 <= end)


def _peer_reaches_dns(peer: Any, policy_namespace: str, ctx: AuditContext, dns_ns_labels: Mapping[str, str]) -> bool:
    if not isinstance(peer, dict):
        return False
    if "ipBlock" in peer:  # addresses are unknown here; only "everything" surely includes the DNS pods
        block = peer.get("ipBlock") or {}
        return block.get("cidr") in ("0.0.0.0/0", "::/0") and not block.get("except")
    pod_selector = peer.get("podSelector")
    pods_match = pod_selector is None or selector_matches(pod_selector or {}, dict(ctx.dns_pod_labels))
    if "namespaceSelector" in peer:
        return pods_match and selector_matches(peer.get("namespaceSelector") or {}, dns_ns_labels)
    return pods_match and policy_namespace == ctx.dns_namespace


def dns_namespace_labels(dns_namespace: Obj | None, ctx: AuditContext) -> dict[str, str]:
    """Labels of the cluster DNS namespace (kubernetes.io/metadata.name even when the object is not known)."""
    return {NAMESPACE_NAME_LABEL: ctx.dns_namespace, **(labels_of(dns_namespace) if dns_namespace else {})}


def policy_allows_dns(policy: Obj, ctx: AuditContext, dns_ns_labels: Mapping[str, str]) -> bool:
    """Does this one NetworkPolicy allow egress to the cluster DNS (UDP 53) for the pods it selects?"""
    if "Egress" not in policy_types(policy):
        return False
    for egress in (policy.get("spec") or {}).get("egress") or []:
        egress = egress if isinstance(egress, dict) else {}
        ports, peers = egress.get("ports") or [], egress.get("to") or []
        port_ok = not ports or any(_port_allows_dns(p) for p in ports)
        peer_ok = not peers or any(_peer_reaches_dns(p, namespace_of(policy), ctx, dns_ns_labels) for p in peers)
        if port_ok and peer_ok:
            return True
    return False


def dns_allowed(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, pod_labels: Mapping[str, str]) -> bool:
    """Can a pod with these labels reach the cluster DNS (UDP 53)?"""
    policies = policies_in(snapshot, ctx, namespace)
    if not isolated(policies, pod_labels, "Egress"):
        return True
    dns_ns_labels = dns_namespace_labels(hygiene_index(snapshot, ctx).namespaces.get(ctx.dns_namespace), ctx)
    return any(policy_selects(p, pod_labels) and policy_allows_dns(p, ctx, dns_ns_labels) for p in policies)


def dns_opt_outs(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> list[dict[str, str]]:
    """Pod selectors (matchLabels) of the AccessPolicies here that turn DNS off (network.dns: false) and whose
    NetworkPolicy is in place: generated for a policy, isolating egress, allowing no DNS. Only one-label
    selectors: a label selector can leave out exactly the pods one label selects, not those a combination of
    labels selects (the policy's Degraded condition says so; see docs/rules.md, "Namespace enforcement")."""
    dns_ns_labels = dns_namespace_labels(hygiene_index(snapshot, ctx).namespaces.get(ctx.dns_namespace), ctx)
    found: dict[tuple[str, str], dict[str, str]] = {}
    for policy in policies_in(snapshot, ctx, namespace):
        if not generated_by_policy(policy) or "Egress" not in policy_types(policy):
            continue
        selector = (policy.get("spec") or {}).get("podSelector")
        selector = selector if isinstance(selector, dict) else {}
        labels = selector.get("matchLabels")
        if selector.get("matchExpressions") or not isinstance(labels, dict) or len(labels) != 1:
            continue
        if policy_allows_dns(policy, ctx, dns_ns_labels):
            continue
        ((key, value),) = labels.items()
        found[(str(key), str(value))] = {str(key): str(value)}
    return [found[k] for k in sorted(found)]


def _port_allows(port: Any, protocol: str, number: int) -> bool:
    if not isinstance(port, dict) or str(port.get("protocol") or "TCP") != protocol:
        return False
    value = port.get("port")
    if value is None:  # every port of the protocol
        return True
    if isinstance(value, str) and not value.isdigit():
        return False  # a named port is a container port of the peer pods, never one of an address outside
    end = port.get("endPort")
    return int(value) == number or (isinstance(end, int) and int(value) <= number <= end)


def _block_contains(peer: Any, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    block = peer.get("ipBlock") if isinstance(peer, dict) else None
    if not isinstance(block, dict):
        return False  # pod and namespace selectors select pods, not addresses outside the pod network
    try:
        if address not in ipaddress.ip_network(str(block.get("cidr")), strict=False):
            return False
        return not any(address in ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or [])
    except ValueError:
        return False


def egress_allows_address(policy: Obj, ip: str, port: int, protocol: str = "TCP") -> bool:
    """Does this one NetworkPolicy's egress allow connections to ip:port (an address outside the pod network,
    such as the API server's)? Only rules without peers or with an ipBlock holding the address can."""
    if "Egress" not in policy_types(policy):
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for egress in (policy.get("spec") or {}).get("egress") or []:
        egress = egress if isinstance(egress, dict) else {}
        ports, peers = egress.get("ports") or [], egress.get("to") or []
        port_ok = not ports or any(_port_allows(p, protocol, port) for p in ports)
        peer_ok = not peers or any(_block_contains(p, address) for p in peers)
        if port_ok and peer_ok:
            return True
    return False
