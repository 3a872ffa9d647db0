"""Namespace controls: a default-deny NetworkPolicy, a DNS egress allow (not for the pods of AccessPolicies that
turn DNS off), and the default ServiceAccount patch."""

from collections.abc import Iterable, Mapping
from typing import Any

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE

DEFAULT_DENY_NAME = "access-hygiene-default-deny"
DNS_ALLOW_NAME = "access-hygiene-allow-dns"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by kube-apiserver on every Namespace
NETWORKING_API_VERSION = "networking.k8s.io/v1"


def _metadata(name: str, namespace: str, namespace_uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Namespace", "name": namespace, "uid": namespace_uid, "controller": False}
        ],
    }


def render_default_deny(
    namespace: str, namespace_uid: str, *, ingress: bool = True, egress: bool = True
) -> dict[str, Any]:
    """Every pod isolated for the chosen directions, nothing allowed (other policies add allows)."""
    policy_types = [t for t, wanted in (("Ingress", ingress), ("Egress", egress)) if wanted]
    return {
        "apiVersion": NETWORKING_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": _metadata(DEFAULT_DENY_NAME, namespace, namespace_uid),
        "spec": {"podSelector": {}, "policyTypes": policy_types},
    }


def dns_pod_selector(excluded: Iterable[Mapping[str, str]]) -> dict[str, Any]:
    """Every pod but those each one-label selector in `excluded` selects: one NotIn per label key (the
    expressions are ANDed, so a pod is left out when any one of the labels matches)."""
    values: dict[str, set[str]] = {}
    for labels in excluded:
        if len(labels) != 1:
            raise ValueError(f"only a one-label selector can be excluded exactly, not {dict(labels)!r}")
        ((key, value),) = labels.items()
        values.setdefault(key, set()).add(value)
    if not values:
        return {}
    return {
        "matchExpressions": [
            {"key": key, "operator": "NotIn", "values": sorted(names)} for key, names in sorted(values.items())
        ]
    }


def render_dns_allow(
    namespace: str,
    namespace_uid: str,
    dns_namespace: str,
    dns_pod_labels: Mapping[str, str],
    excluded: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Egress to the cluster DNS pods on port 53 (UDP and TCP) from every pod, except the pods of AccessPolicies
    that turn DNS off (`excluded`: their one-label pod selectors)."""
    return {
        "apiVersion": NETWORKING_API_VERSION,
        "kind": "NetworkPolicy",
        "metadata": _metadata(DNS_ALLOW_NAME, namespace, namespace_uid),
        "spec": {
            "podSelector": dns_pod_selector(excluded),
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: dns_namespace}},
                            "podSelector": {"matchLabels": dict(sorted(dns_pod_labels.items()))},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            ],
        },
    }


def render_namespace_controls(
    namespace: str,
    namespace_uid: str,
    dns_namespace: str,
    dns_pod_labels: Mapping[str, str],
    *,
    ingress: bool = True,
    egress: bool = True,
    dns_excluded: Iterable[Mapping[str, str]] = (),
) -> list[dict[str, Any]]:
    """The default deny (for the chosen directions) plus, when egress is denied, the DNS allow (for every pod
    but those `dns_excluded` selects)."""
    manifests: list[dict[str, Any]] = []
    if ingress or egress:
        manifests.append(render_default_deny(namespace, namespace_uid, ingress=ingress, egress=egress))
    if egress:
        manifests.append(render_dns_allow(namespace, namespace_uid, dns_namespace, dns_pod_labels, dns_excluded))
    return manifests


def render_default_sa_patch(namespace: str) -> dict[str, Any]:
    """Server-side apply body: only the field we own on the default ServiceAccount."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": namespace},
        "automountServiceAccountToken": False,
    }
