"""What an AccessPolicy's status says is what the cluster holds (issue 25): on the real control plane, with the
operator running. This cluster publishes no API server endpoints (no EndpointSlice of default/kubernetes), like
the local default."""

import copy
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.cluster.conftest import wait_for
from tests.cluster.test_policy_operator import condition, create_policy, get_policy
from tests.conftest import Cluster
from tests.pinned_clock import PINNED_NOW

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


# --- item 4 -----------------------------------------------------------------------------------------------------


def live_network_policies(api: kubernetes.client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    from access_hygiene.k8s import resources

    return list(resources.list_objects(api, "networking.k8s.io/v1", "NetworkPolicy", namespace=namespace))


def dns_reachable(api: kubernetes.client.ApiClient, namespace: str, pod_labels: dict[str, str]) -> bool:
    """Judged over the live NetworkPolicies (as the API server stored them) with the hygiene rules' semantics."""
    from access_hygiene.engine.ground.context import AuditContext
    from access_hygiene.engine.ground.network_policies import dns_allowed
    from access_hygiene.engine.ground.snapshot import ClusterSnapshot

    snapshot = ClusterSnapshot(network_policies=live_network_policies(api, namespace))
    return dns_allowed(snapshot, AuditContext(now=PINNED_NOW), namespace, pod_labels)  # no time-bound rule here


def dns_allow_selector(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, Any] | None:
    found = [p for p in live_network_policies(api, namespace) if p["metadata"]["name"] == "access-hygiene-allow-dns"]
    return found[0]["spec"].get("podSelector") if found else None


def test_dns_false_takes_the_pods_out_of_the_namespace_dns_allow(
    operator: KopfRunner, cluster: Cluster, enforced_namespace: str
) -> None:
    namespace = enforced_namespace
    quiet, pair = {"app.kubernetes.io/name": "quiet"}, {"app": "pair", "tier": "web"}
    with cluster.api_client() as api:
        wait_for(lambda: dns_allow_selector(api, namespace) == {})  # namespace hygiene: every pod may use DNS
        assert dns_reachable(api, namespace, quiet)
        create_policy(api, namespace, "quiet", {"mode": "enforce", "network": {"dns": False}})
        pair_spec = {"mode": "enforce", "podSelector": {"matchLabels": pair}, "network": {"dns": False}}
        create_policy(api, namespace, "pair", pair_spec)
        expected = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["quiet"]}]}
        wait_for(lambda: dns_allow_selector(api, namespace) == expected)
        assert not dns_reachable(api, namespace, quiet)
        assert dns_reachable(api, namespace, {"app.kubernetes.io/name": "other"})
        assert dns_reachable(api, namespace, {})

        def degraded(name: str) -> tuple[str, str]:
            found = current_condition(api, namespace, name, "Degraded")
            return found["status"], found["reason"]

        wait_for(lambda: degraded("quiet") == ("False", "AsExpected"))
        # Two labels cannot be left out of a label selector exactly: the pods keep DNS, and the policy says so.
        assert dns_reachable(api, namespace, pair)
        wait_for(lambda: degraded("pair") == ("True", "DNSStillAllowed"))
        message = current_condition(api, namespace, "pair", "Degraded")["message"]
        assert "access-hygiene-allow-dns" in message
        assert "2 labels" in message

        # DNS back on: the exclusion goes, and the app's own NetworkPolicy allows DNS.
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "accesshygiene.io", "v1alpha1", namespace, "accesspolicies", "quiet", {"spec": {"network": {"dns": True}}}
        )
        wait_for(lambda: dns_allow_selector(api, namespace) == {})
        assert dns_reachable(api, namespace, quiet)


# --- item 11 ----------------------------------------------------------------------------------------------------


def policy_events(api: kubernetes.client.ApiClient, namespace: str, name: str) -> list[Any]:
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=AccessPolicy,involvedObject.name={name}"
    )
    return [
        e for e in events.items if e.source.component == "access-hygiene" or e.reporting_component == "access-hygiene"
    ]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["gett"]},
         "rbac.rules[0]: unknown verb 'gett' (did you mean get?)"),
        ({"apiGroups": [""], "resources": ["configmap"], "verbs": ["get"]},  # judged by the real API discovery
         "rbac.rules[0]: resource 'configmap' is not served by the API server (did you mean configmaps?)"),
    ],
)  # fmt: skip
def test_a_typo_is_invalid_input_announced_once_without_a_service_account(
    operator: KopfRunner, cluster: Cluster, enforced_namespace: str, rule: dict[str, Any], message: str
) -> None:
    namespace = enforced_namespace
    with cluster.api_client() as api:
        create_policy(api, namespace, "typo", {"mode": "enforce", "rbac": {"rules": [rule]}})
        ready = current_condition(api, namespace, "typo", "Ready")
        assert (ready["status"], ready["reason"], ready["message"]) == ("False", "InvalidSpec", message)
        events = wait_for(lambda: policy_events(api, namespace, "typo"))
        assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "InvalidSpec", message)]
        assert events[0].involved_object.uid == get_policy(api, namespace, "typo")["metadata"]["uid"]
        sas = kubernetes.client.CoreV1Api(api).list_namespaced_service_account(namespace).items
        assert "typo" not in [sa.metadata.name for sa in sas]
        kubectl = [str(cluster.control_plane.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig)]
        table = subprocess.run([*kubectl, "get", "ap", "-n", namespace], capture_output=True, text=True, check=True)
        header, row = table.stdout.splitlines()
        assert header.split()[:5] == ["NAME", "READY", "MODE", "SERVICEACCOUNT", "VIOLATIONS"]
        start, end = header.index("SERVICEACCOUNT"), header.index("VIOLATIONS")
        assert row[start:end].strip() in ("", "<none>"), table.stdout
        time.sleep(4)  # drift-timer ticks (2 s here) reconcile the policy again: the refusal is not announced again
        assert len(policy_events(api, namespace, "typo")) == 1
