"""AccessPolicy -> manifests: the app's ServiceAccount, Role + RoleBinding, ClusterRole + binding, NetworkPolicy.

One NetworkPolicy per policy: it selects the app's pods with both policyTypes, which denies everything
not listed, and lists the allows. NetworkPolicies are additive, so one object is equivalent to a
separate deny plus allows, and it is easier to read and to own.

Empty lists and maps are never emitted: the API drops them, and a rendered `[]` would then look like
drift on every reconcile.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from access_hygiene import API_GROUP, API_VERSION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, POLICY_LABEL
from access_hygiene.models.policy import APP_LABEL, Peer, PolicyRule, PortSpec, ResolvedPolicy
from access_hygiene.render.names import label_value, object_name

POLICY_UID_LABEL = f"{API_GROUP}/policy-uid"
POLICY_NAMESPACE_LABEL = f"{API_GROUP}/policy-namespace"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
RBAC_API = "rbac.authorization.k8s.io/v1"


@dataclass(frozen=True)
class ClusterFacts:
    api_server_endpoints: tuple[tuple[str, int], ...] = ()
    dns_namespace: str = "kube-system"
    dns_pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)


def generated_name(policy: ResolvedPolicy) -> str:
    """Name of the Role, RoleBinding and NetworkPolicy of a policy."""
    return object_name("access-hygiene", policy.name)


def cluster_generated_name(policy: ResolvedPolicy) -> str:
    return object_name("access-hygiene", policy.namespace, policy.name)


def _labels(policy: ResolvedPolicy) -> dict[str, str]:
    return {
        MANAGED_BY_LABEL: MANAGED_BY_VALUE,
        POLICY_LABEL: label_value(policy.name),
        "app.kubernetes.io/part-of": label_value(policy.app),
    }


def _owner(policy: ResolvedPolicy) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": "AccessPolicy",
            "name": policy.name,
            "uid": policy.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _namespaced_meta(policy: ResolvedPolicy, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": policy.namespace, "labels": _labels(policy), "ownerReferences": _owner(policy)}


def _cluster_meta(policy: ResolvedPolicy, name: str) -> dict[str, Any]:
    # Cluster-scoped objects cannot have a namespaced owner; labels let the operator find and prune them.
    labels = {**_labels(policy), POLICY_UID_LABEL: policy.uid, POLICY_NAMESPACE_LABEL: policy.namespace}
    return {"name": name, "labels": labels}


def render_rules(rules: Sequence[PolicyRule]) -> list[dict[str, Any]]:
    """Rules as declared, each field de-duplicated and sorted so the output is deterministic."""
    rendered = []
    for rule in rules:
        item: dict[str, Any] = {
            "apiGroups": sorted(set(rule.api_groups)),
            "resources": sorted(set(rule.resources)),
            "verbs": sorted(set(rule.verbs)),
        }
        if rule.resource_names:
            item["resourceNames"] = sorted(set(rule.resource_names))
        rendered.append(item)
    return rendered


def render_service_account(policy: ResolvedPolicy) -> dict[str, Any]:
    metadata = _namespaced_meta(policy, policy.service_account_name)
    if policy.spec.service_account.annotations:
        metadata["annotations"] = dict(sorted(policy.spec.service_account.annotations.items()))
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata,
        "automountServiceAccountToken": policy.automount_token,
    }


def _subject(policy: ResolvedPolicy) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": policy.service_account_name, "namespace": policy.namespace}]


def render_rbac(policy: ResolvedPolicy) -> list[dict[str, Any]]:
    manifests: list[dict[str, Any]] = []
    if policy.spec.rbac.rules:
        name = generated_name(policy)
        manifests += [
            {
                "apiVersion": RBAC_API,
                "kind": "Role",
                "metadata": _namespaced_meta(policy, name),
                "rules": render_rules(policy.spec.rbac.rules),
            },
            {
                "apiVersion": RBAC_API,
                "kind": "RoleBinding",
                "metadata": _namespaced_meta(policy, name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": _subject(policy),
            },
        ]
    if policy.spec.rbac.cluster_rules:
        name = cluster_generated_name(policy)
        manifests += [
            {
                "apiVersion": RBAC_API,
                "kind": "ClusterRole",
                "metadata": _cluster_meta(policy, name),
                "rules": render_rules(policy.spec.rbac.cluster_rules),
            },
            {
                "apiVersion": RBAC_API,
                "kind": "ClusterRoleBinding",
                "metadata": _cluster_meta(policy, name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": _subject(policy),
            },
        ]
    return manifests


def _match(labels: Mapping[str, str]) -> dict[str, Any]:
    return {"matchLabels": dict(sorted(labels.items()))}


def render_peer(peer: Peer) -> dict[str, Any]:
    if peer.ip_block is not None:
        block: dict[str, Any] = {"cidr": peer.ip_block.cidr}
        if peer.ip_block.except_:
            block["except"] = list(peer.ip_block.except_)
        return {"ipBlock": block}
    rendered: dict[str, Any] = {}
    if peer.app:
        rendered["podSelector"] = _match({APP_LABEL: peer.app})
    elif peer.pod_selector is not None:
        rendered["podSelector"] = _match(peer.pod_selector.match_labels)
    if peer.namespace:
        rendered["namespaceSelector"] = _match({NAMESPACE_NAME_LABEL: peer.namespace})
    elif peer.namespace_selector is not None:
        rendered["namespaceSelector"] = _match(peer.namespace_selector.match_labels)
    return rendered


def render_ports(ports: Sequence[PortSpec]) -> list[dict[str, Any]]:
    rendered = []
    for port in ports:
        item: dict[str, Any] = {"protocol": port.protocol, "port": port.port}
        if port.end_port is not None:
            item["endPort"] = port.end_port
        rendered.append(item)
    return rendered


def _rule(peers_key: str, peers: list[dict[str, Any]], ports: list[dict[str, Any]]) -> dict[str, Any]:
    rule: dict[str, Any] = {peers_key: peers}
    if ports:
        rule["ports"] = ports
    return rule


def render_network_policy(policy: ResolvedPolicy, facts: ClusterFacts) -> dict[str, Any] | None:
    network = policy.spec.network
    if network is None:
        return None
    ingress = [_rule("from", [render_peer(p) for p in r.from_], render_ports(r.ports)) for r in network.ingress]
    egress = [_rule("to", [render_peer(p) for p in r.to], render_ports(r.ports)) for r in network.egress]
    if network.dns:
        dns_peer = {
            "namespaceSelector": _match({NAMESPACE_NAME_LABEL: facts.dns_namespace}),
            "podSelector": _match(dict(facts.dns_pod_labels)),
        }
        egress.append(_rule("to", [dns_peer], [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]))
    if network.kube_api_server and facts.api_server_endpoints:
        ips = sorted({ip for ip, _ in facts.api_server_endpoints})
        ports = sorted({port for _, port in facts.api_server_endpoints})
        egress.append(
            _rule(
                "to",
                [{"ipBlock": {"cidr": f"{ip}/{128 if ':' in ip else 32}"}} for ip in ips],
                [{"protocol": "TCP", "port": port} for port in ports],
            )
        )
    spec: dict[str, Any] = {"podSelector": _match(policy.pod_labels), "policyTypes": ["Ingress", "Egress"]}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _namespaced_meta(policy, generated_name(policy)),
        "spec": spec,
    }


def render_policy(policy: ResolvedPolicy, facts: ClusterFacts) -> list[dict[str, Any]]:
    """Every object the policy wants, in a fixed order: SA, Role, RoleBinding, cluster RBAC, NetworkPolicy."""
    manifests = [render_service_account(policy), *render_rbac(policy)]
    network_policy = render_network_policy(policy, facts)
    if network_policy is not None:
        manifests.append(network_policy)
    return manifests
