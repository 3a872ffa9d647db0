"""sync_policy's verdicts (Ready, Degraded, status fields) over an in-memory cluster state, no API server: every
case here either is refused before the first write or finds its objects already in place (a no-op reconcile
makes no API call, so the `api` argument is never used)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.k8s.policy_sync import SyncResult, cluster_facts, sync_policy
from access_hygiene.k8s.watch_cache import ClusterState, WatchSpec
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.reconcile.status import api_server_degradation
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from access_hygiene.render.namespace import render_dns_allow
from access_hygiene.render.policy import render_policy
from access_hygiene.settings import OperatorSettings

pytestmark = pytest.mark.unit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = OperatorSettings()
KINDS = ("ClusterRole", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "EndpointSlice", "Namespace")
NO_API: Any = None  # never called: see the module docstring


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"].update(uid=f"uid-{body['metadata']['name']}", generation=1)
    return body


def api_server_slice(ip: str = "10.0.0.1", port: int = 6443) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip]}],
    }


def state_of(*objects: dict[str, Any]) -> ClusterState:
    state = ClusterState([WatchSpec("v1", kind) for kind in KINDS])
    for kind in KINDS:
        state.replace(kind, [o for o in objects if o["kind"] == kind])
    return state


def in_place(body: dict[str, Any], *cluster: dict[str, Any]) -> ClusterState:
    """The ceiling, `cluster`, and every object the policy renders there, as if an earlier reconcile wrote them."""
    state = state_of(render_grant_ceiling_role(SETTINGS.grant_ceiling_cluster_role), *cluster)
    policy = resolve_policy(body["metadata"], AccessPolicySpec.model_validate(body["spec"]))
    return state_of(
        render_grant_ceiling_role(SETTINGS.grant_ceiling_cluster_role),
        *cluster,
        *render_policy(policy, cluster_facts(state, SETTINGS)),
    )


def sync(body: dict[str, Any], state: ClusterState) -> SyncResult:
    return sync_policy(NO_API, body, SETTINGS, NOW, state)


def condition(result: SyncResult, type_: str) -> tuple[str, str]:
    found = next(c for c in result.status["conditions"] if c["type"] == type_)
    return found["status"], found["reason"]


# --- issue 25, item 3: API server egress is judged from the rendered rules ------------------------------------


def test_an_unrelated_ip_block_does_not_stand_for_the_api_server_egress() -> None:
    """orders-api has a database ipBlock; with no API server endpoints known it has no API server egress."""
    body = example("orders-api.yaml")
    result = sync(body, in_place(body))
    assert (result.outcome, result.writes) == ("success", 0)
    assert condition(result, "Ready") == ("True", "Reconciled")
    assert condition(result, "Degraded") == ("True", "APIServerEndpointsUnknown")


def test_a_policy_without_other_egress_is_degraded_the_same_way() -> None:
    body = example("pod-watcher-controller.yaml")
    assert condition(sync(body, in_place(body)), "Degraded") == ("True", "APIServerEndpointsUnknown")


def test_known_endpoints_render_the_egress_and_the_policy_is_not_degraded() -> None:
    body = example("orders-api.yaml")
    result = sync(body, in_place(body, api_server_slice()))
    assert result.writes == 0
    assert condition(result, "Degraded") == ("False", "AsExpected")


def test_no_api_server_egress_requested_is_not_degraded() -> None:
    body = example("orders-api.yaml")
    body["spec"]["network"]["kubeAPIServer"] = False
    assert condition(sync(body, in_place(body)), "Degraded") == ("False", "AsExpected")


def egress_policy(*egress: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": list(egress)}}


API_PORT = [{"protocol": "TCP", "port": 6443}]


@pytest.mark.parametrize(
    ("egress", "allowed"),
    [
        ({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": API_PORT}, True),
        ({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}, True),  # no ports: every port
        ({}, True),  # no peers, no ports: everywhere
        ({"ports": [{"protocol": "TCP", "port": 6000, "endPort": 7000}]}, True),
        ({"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 5432}]}, False),  # the database
        ({"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/24"]}}]}, False),
        ({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "UDP", "port": 6443}]}, False),
        ({"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": "https"}]}, False),  # named: pods only
        ({"to": [{"ipBlock": {"cidr": "::/0"}}]}, False),
        ({"to": [{"podSelector": {}, "namespaceSelector": {}}]}, False),  # pods, not addresses
    ],
)
def test_api_server_egress_is_read_from_the_rendered_rules(egress: dict[str, Any], allowed: bool) -> None:
    body = example("orders-api.yaml")
    policy = resolve_policy(body["metadata"], AccessPolicySpec.model_validate(body["spec"]))
    verdict = api_server_degradation(policy, [egress_policy(egress)], [("10.0.0.1", 6443)])
    reason = verdict[0] if verdict else None
    assert reason == (None if allowed else "APIServerEgressMissing")


# --- issue 25, item 4: network.dns: false is judged from every NetworkPolicy that selects the app's pods -----------


def quiet(pod_selector: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": "enforce", "network": {"dns": False}}
    if pod_selector:
        spec["podSelector"] = {"matchLabels": pod_selector}
    metadata = {"name": "quiet", "namespace": "shop", "uid": "uid-quiet", "generation": 1}
    return {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy", "metadata": metadata, "spec": spec}


def namespace_dns_allow(*excluded: dict[str, str]) -> dict[str, Any]:
    return render_dns_allow("shop", "uid-shop", "kube-system", {"k8s-app": "kube-dns"}, excluded)


def test_dns_off_while_the_namespace_dns_allow_still_selects_the_pods_is_degraded() -> None:
    body = quiet()
    result = sync(body, in_place(body, namespace_dns_allow()))
    assert condition(result, "Ready") == ("True", "Reconciled")
    assert condition(result, "Degraded") == ("True", "DNSStillAllowed")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Degraded")
    assert "NetworkPolicy access-hygiene-allow-dns allows these pods DNS egress" in message


def test_dns_off_with_the_pods_left_out_of_the_namespace_dns_allow_is_not_degraded() -> None:
    body = quiet()
    result = sync(body, in_place(body, namespace_dns_allow({"app.kubernetes.io/name": "quiet"})))
    assert condition(result, "Degraded") == ("False", "AsExpected")
    assert condition(sync(body, in_place(body)), "Degraded") == ("False", "AsExpected")  # no namespace DNS allow


def test_dns_off_for_a_label_combination_says_why_it_cannot_be_honoured() -> None:
    body = quiet({"app": "quiet", "tier": "web"})
    result = sync(body, in_place(body, namespace_dns_allow({"app.kubernetes.io/name": "other"})))
    assert condition(result, "Degraded") == ("True", "DNSStillAllowed")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Degraded")
    assert "this policy's podSelector has 2 labels, so it cannot" in message
