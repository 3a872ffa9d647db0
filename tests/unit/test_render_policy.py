"""render_policy: manifests for a resolved AccessPolicy."""

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.names import label_value, object_name
from access_hygiene.render.policy import ClusterFacts, render_policy

pytestmark = pytest.mark.unit
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
META = {"name": "orders-api", "namespace": "shop", "uid": "uid-1", "generation": 1}
FACTS = ClusterFacts(api_server_endpoints=(("10.0.0.1", 6443),))


def render(spec: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    manifests = render_policy(resolve_policy(meta or META, AccessPolicySpec.model_validate(spec)), FACTS)
    return {m["kind"]: m for m in manifests}


def test_minimal_policy_is_a_service_account_without_token() -> None:
    out = render({})
    assert list(out) == ["ServiceAccount"]
    sa = out["ServiceAccount"]
    assert sa["metadata"]["name"] == "orders-api"
    assert sa["automountServiceAccountToken"] is False
    owner = sa["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("AccessPolicy", "uid-1", True)
    assert sa["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "access-hygiene"


def test_rules_become_role_and_binding_for_the_app_service_account() -> None:
    out = render(
        {
            "rbac": {
                "rules": [
                    {"resources": ["pods", "pods"], "verbs": ["watch", "get"]},
                    {"resources": ["configmaps"], "resourceNames": ["b", "a"], "verbs": ["get"]},
                ]
            }
        }
    )
    assert out["ServiceAccount"]["automountServiceAccountToken"] is True
    assert out["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "watch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a", "b"]},
    ]
    binding = out["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": out["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "orders-api", "namespace": "shop"}]


def test_cluster_rules_are_labelled_not_owned() -> None:
    out = render({"rbac": {"clusterRules": [{"resources": ["nodes"], "verbs": ["get"]}]}})
    role = out["ClusterRole"]
    assert "ownerReferences" not in role["metadata"]
    assert role["metadata"]["labels"]["accesshygiene.io/policy-uid"] == "uid-1"
    assert "namespace" not in role["metadata"]
    assert out["ClusterRoleBinding"]["roleRef"]["name"] == role["metadata"]["name"]


def test_network_policy_denies_by_default_and_lists_allows() -> None:
    spec = {
        "network": {
            "ingress": [{"from": [{"app": "web"}, {"namespace": "ingress", "app": "lb"}], "ports": [{"port": 8080}]}],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"]}}],
                    "ports": [{"port": 5432, "protocol": "TCP"}],
                }
            ],
            "kubeAPIServer": True,
        }
    }
    policy = render(spec)["NetworkPolicy"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "orders-api"}}
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [
        {
            "from": [
                {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}},
                {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "lb"}},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}},
                },
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    egress = policy["egress"]
    assert egress[0] == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.1.0/24"]}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    }
    assert egress[1]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert egress[1]["to"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert egress[2] == {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 6443}]}


def test_deny_all_network_has_no_empty_lists() -> None:
    # The API drops empty lists; rendering them would look like drift on every reconcile.
    policy = render({"network": {"dns": False}})["NetworkPolicy"]["spec"]
    assert policy == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "orders-api"}},
        "policyTypes": ["Ingress", "Egress"],
    }


def test_unknown_api_server_endpoints_render_no_api_egress() -> None:
    manifests = render_policy(
        resolve_policy(META, AccessPolicySpec.model_validate({"network": {"kubeAPIServer": True, "dns": False}})),
        ClusterFacts(),
    )
    assert "egress" not in manifests[-1]["spec"]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [(("access-hygiene", "web"), "access-hygiene-web"), (("a.b",), None), (("x" * 80,), None), (("UPPER",), None)],
)
def test_object_names_are_valid_and_stable(parts: tuple[str, ...], expected: str | None) -> None:
    name = object_name(*parts)
    assert DNS_LABEL.match(name)
    assert len(name) <= 63
    assert object_name(*parts) == name
    if expected:
        assert name == expected


def test_names_that_needed_cleaning_do_not_collide() -> None:
    assert object_name("a.b") != object_name("a-b")
    assert len(label_value("p" * 200)) <= 63


policy_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,120}[a-z0-9])?", fullmatch=True)
rule = st.fixed_dictionaries(
    {
        "resources": st.lists(st.sampled_from(["pods", "configmaps", "services"]), min_size=1, max_size=3),
        "verbs": st.lists(st.sampled_from(["get", "list", "watch"]), min_size=1, max_size=3),
    }
)


@settings(max_examples=80)
@given(name=policy_names, rules=st.lists(rule, max_size=4), network=st.booleans())
def test_render_is_deterministic_and_names_are_valid(name: str, rules: list[dict[str, Any]], network: bool) -> None:
    spec: dict[str, Any] = {"rbac": {"rules": rules}}
    if network:
        spec["network"] = {"ingress": [{"from": [{"app": "web"}]}]}
    meta = {**META, "name": name}
    if len(name) > 63 or "." in name:
        spec["app"] = "app"  # the app name (a DNS label) defaults to the policy name
    first = render_policy(resolve_policy(meta, AccessPolicySpec.model_validate(spec)), FACTS)
    second = render_policy(resolve_policy(meta, AccessPolicySpec.model_validate(spec)), FACTS)
    assert first == second
    for manifest in first:
        if manifest["kind"] != "ServiceAccount":
            assert DNS_LABEL.match(manifest["metadata"]["name"])
            assert len(manifest["metadata"]["name"]) <= 63
        assert all(len(v) <= 63 for v in manifest["metadata"]["labels"].values())
