"""Facts about the cluster that rendering needs: API server endpoints, DNS selector, the grant ceiling."""

from typing import Any

import kubernetes

from access_hygiene.k8s import resources
from access_hygiene.render.policy import ClusterFacts
from access_hygiene.settings import OperatorSettings


def api_server_endpoints(api: kubernetes.client.ApiClient) -> tuple[tuple[str, int], ...]:
    """(ip, port) pairs behind default/kubernetes: what pods really dial after kube-proxy DNAT."""
    endpoints: set[tuple[str, int]] = set()
    for slice_ in resources.list_objects(
        api,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        namespace="default",
        label_selector="kubernetes.io/service-name=kubernetes",
    ):
        ports = [int(p["port"]) for p in slice_.get("ports") or [] if p.get("port")]
        for endpoint in slice_.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                endpoints.update((str(address), port) for port in ports)
    return tuple(sorted(endpoints))


def cluster_facts(api: kubernetes.client.ApiClient, settings: OperatorSettings) -> ClusterFacts:
    return ClusterFacts(
        api_server_endpoints=api_server_endpoints(api),
        dns_namespace=settings.dns_namespace,
        dns_pod_labels=tuple(sorted(settings.dns_pod_labels.items())),
    )


def grant_ceiling_rules(api: kubernetes.client.ApiClient, cluster_role: str) -> list[dict[str, Any]] | None:
    """Rules of the ceiling ClusterRole, or None when it does not exist."""
    role = resources.get(api, "rbac.authorization.k8s.io/v1", "ClusterRole", cluster_role)
    if role is None:
        return None
    return [dict(rule) for rule in role.get("rules") or []]
