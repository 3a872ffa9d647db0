"""What an AccessPolicy's status says is what the cluster holds (issue 25): on the real control plane, with the
operator running. This cluster publishes no API server endpoints (no EndpointSlice of default/kubernetes), like
the local default."""

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.cluster.conftest import wait_for
from tests.cluster.test_policy_operator import condition, create_policy, get_policy
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

ORDERS_API: dict[str, Any] = {  # examples/orders-api.yaml
    "mode": "enforce",
    "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"],
                        "verbs": ["get"]}]},
    "network": {
        "ingress": [{"from": [{"app": "web"}], "ports": [{"port": 8080}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5432}]}],
        "dns": True,
        "kubeAPIServer": True,
    },
}  # fmt: skip


@pytest.fixture
def enforced_namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace in enforce mode (namespace hygiene writes its default deny and DNS allow)."""
    name = f"p-{uuid.uuid4().hex[:10]}"
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"accesshygiene.io/mode": "enforce"}}})
        yield name
        core.delete_namespace(name)


def current_condition(api: kubernetes.client.ApiClient, namespace: str, name: str, type_: str) -> dict[str, Any]:
    """The condition once the status is about the current generation."""

    def current() -> dict[str, Any] | None:
        policy = get_policy(api, namespace, name)
        if (policy.get("status") or {}).get("observedGeneration") != policy["metadata"]["generation"]:
            return None
        return condition(policy, type_)

    found: dict[str, Any] = wait_for(current, timeout=30)
    return found


# --- item 3 -----------------------------------------------------------------------------------------------------


def test_a_database_ip_block_does_not_hide_the_missing_api_server_egress(
    operator: KopfRunner, cluster: Cluster, enforced_namespace: str
) -> None:
    namespace = enforced_namespace
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", copy.deepcopy(ORDERS_API))
        ready = wait_for(lambda: (condition(get_policy(api, namespace, "orders-api"), "Ready") or {}).get("reason"))
        assert ready == "Reconciled"
        degraded = current_condition(api, namespace, "orders-api", "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "APIServerEndpointsUnknown"), degraded
        generated = kubernetes.client.NetworkingV1Api(api).read_namespaced_network_policy(
            "access-hygiene-orders-api", namespace
        )
        cidrs = [peer.ip_block.cidr for rule in generated.spec.egress for peer in rule.to or [] if peer.ip_block]
        assert cidrs == ["10.20.0.0/16"]  # the database only: no API server address is allowed
