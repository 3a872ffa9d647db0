"""sync_policy's verdicts (Ready, Degraded, status fields) over an in-memory cluster state, no API server: every
case here either is refused before the first write or finds its objects already in place (a no-op reconcile
makes no API call, so the `api` argument is never used)."""

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.engine.planning.policy_status import api_server_degradation, refusal_news
from access_hygiene.engine.rbac.grant_ceiling import check_grant_ceiling, refusal_reason
from access_hygiene.k8s.events import render_policy_event
from access_hygiene.k8s.policy_sync import SyncResult, cluster_facts, sync_policy
from access_hygiene.k8s.watch_cache import ClusterState, WatchSpec
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
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


def test_dns_off_with_egress_rules_that_reach_the_cluster_dns_says_so() -> None:
    body = quiet()
    body["spec"]["network"]["egress"] = [{"to": [{"namespace": "kube-system"}]}]  # every port: DNS included
    result = sync(body, in_place(body))
    assert condition(result, "Degraded") == ("True", "DNSStillAllowed")
    message = next(c["message"] for c in result.status["conditions"] if c["type"] == "Degraded")
    assert "access-hygiene-quiet is this policy's own" in message


# --- issue 25, item 11: a typo is invalid input; refusals are announced once; no ServiceAccount that is not there ----


def greedy(*rules: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": "greedy", "namespace": "shop", "uid": "uid-greedy", "generation": 1}
    spec = {"mode": "enforce", "rbac": {"rules": list(rules)}}
    return {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy", "metadata": metadata, "spec": spec}


def ready_message(result: SyncResult) -> str:
    return str(next(c["message"] for c in result.status["conditions"] if c["type"] == "Ready"))


CEILING_ONLY = state_of(render_grant_ceiling_role(SETTINGS.grant_ceiling_cluster_role))


def test_an_unknown_verb_is_invalid_input_not_a_ceiling_refusal() -> None:
    result = sync(greedy({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["gett"]}), CEILING_ONLY)
    assert (result.outcome, condition(result, "Ready")) == ("invalid", ("False", "InvalidSpec"))
    assert ready_message(result) == "rbac.rules[0]: unknown verb 'gett' (did you mean get?)"
    assert result.status["serviceAccount"] == ""  # nothing was written: no ServiceAccount to show


def test_a_typo_next_to_a_real_refusal_is_still_invalid_input_and_both_are_named() -> None:
    result = sync(
        greedy(
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["gett"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
        ),
        CEILING_ONLY,
    )
    assert condition(result, "Ready") == ("False", "InvalidSpec")
    assert "unknown verb 'gett'" in ready_message(result)
    assert "rbac.rules[1]: refused, reading secrets" in ready_message(result)


def test_asking_beyond_the_ceiling_is_still_a_ceiling_refusal() -> None:
    result = sync(greedy({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}), CEILING_ONLY)
    assert (result.outcome, condition(result, "Ready")) == ("refused", ("False", "GrantCeilingExceeded"))


@pytest.mark.parametrize(
    ("rule", "reason", "message"),
    [
        ({"resources": ["configmap"], "verbs": ["get"]}, "InvalidSpec",
         "resource 'configmap' is not served by the API server (did you mean configmaps?)"),
        ({"apiGroups": ["app"], "resources": ["deployments"], "verbs": ["get"]}, "InvalidSpec",
         "apiGroup 'app' is not served by the API server (did you mean apps?)"),
        ({"resources": ["configmaps"], "verbs": ["get"]}, None, ""),
        ({"resources": ["secrets"], "verbs": ["get"]}, "GrantCeilingExceeded", "reading secrets"),
    ],
)  # fmt: skip
def test_unserved_resources_are_invalid_input(rule: dict[str, Any], reason: str | None, message: str) -> None:
    """With API discovery (what the API server serves), as the operator checks."""
    body = greedy(rule)
    policy = resolve_policy(body["metadata"], AccessPolicySpec.model_validate(body["spec"]))
    served = {"": {"configmaps", "secrets", "pods"}, "apps": {"deployments"}}
    ceiling = render_grant_ceiling_role(SETTINGS.grant_ceiling_cluster_role)["rules"]
    violations = check_grant_ceiling(policy, ceiling, served=served)
    assert (refusal_reason(violations) if violations else None) == reason
    assert message in "; ".join(v.reason for v in violations)


def test_a_refused_policy_shows_its_service_account_only_when_it_exists() -> None:
    body = greedy({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})
    earlier = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "greedy", "namespace": "shop"}}
    ceiling = render_grant_ceiling_role(SETTINGS.grant_ceiling_cluster_role)
    assert sync(body, state_of(ceiling, earlier)).status["serviceAccount"] == "greedy"
    assert sync(body, state_of(ceiling)).status["serviceAccount"] == ""


def test_an_audit_mode_policy_shows_no_service_account_it_did_not_write() -> None:
    body = example("orders-api.yaml")
    body["spec"]["mode"] = "audit"
    result = sync(body, CEILING_ONLY)
    assert condition(result, "Ready") == ("True", "AuditOnly")
    assert result.status["serviceAccount"] == ""
    assert sync(body, in_place(body)).status["serviceAccount"] == "orders-api"


def test_a_refusal_is_news_once_per_reason_message_and_generation() -> None:
    body = greedy({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["gett"]})
    first = sync(body, CEILING_ONLY)
    assert refusal_news(body.get("status"), first.status) == (
        "InvalidSpec",
        "rbac.rules[0]: unknown verb 'gett' (did you mean get?)",
    )
    stored = {**body, "status": first.status}
    assert refusal_news(stored["status"], sync(stored, CEILING_ONLY).status) is None  # said already
    edited = copy.deepcopy(stored)
    edited["metadata"]["generation"] = 2  # the same typo, applied again
    assert refusal_news(edited["status"], sync(edited, CEILING_ONLY).status) is not None
    fixed = copy.deepcopy(stored)
    fixed["spec"]["rbac"]["rules"][0]["verbs"] = ["get"]
    assert refusal_news(fixed["status"], sync(fixed, in_place(fixed)).status) is None  # Ready again


def test_the_refusal_event_is_a_warning_on_the_access_policy() -> None:
    body = greedy({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["gett"]})
    event = render_policy_event(body, "InvalidSpec", "rbac.rules[0]: unknown verb 'gett' (did you mean get?)", NOW)
    assert event["involvedObject"] == {"apiVersion": "accesshygiene.io/v1alpha1", "kind": "AccessPolicy",
                                       "name": "greedy", "namespace": "shop", "uid": "uid-greedy"}  # fmt: skip
    assert (event["type"], event["reason"], event["metadata"]["namespace"]) == ("Warning", "InvalidSpec", "shop")
    assert "did you mean get?" in event["message"]
