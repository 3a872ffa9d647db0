"""The grant ceiling: coverage by the ceiling ClusterRole and refusal of sensitive capabilities."""

from typing import Any

import pytest

from access_hygiene.engine.rbac.grant_ceiling import SENSITIVE_CAPABILITIES, check_grant_ceiling
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES

pytestmark = pytest.mark.unit
META = {"name": "app", "namespace": "ns", "uid": "u"}
WIDE_CEILING = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]


def check(
    rules: list[dict[str, Any]],
    ceiling: list[dict[str, Any]] | None = None,
    *,
    cluster: bool = False,
    allowed: frozenset[str] = frozenset(),
    allow_cluster: bool = False,
) -> list[tuple[str, str]]:
    spec = {"rbac": {"clusterRules" if cluster else "rules": rules}}
    policy = resolve_policy(META, AccessPolicySpec.model_validate(spec))
    found = check_grant_ceiling(
        policy,
        WIDE_CEILING if ceiling is None else ceiling,
        allowed_sensitive=allowed,
        allow_cluster_rules=allow_cluster,
    )
    return [(v.capability, v.reason) for v in found]


@pytest.mark.parametrize(
    ("rule", "capability"),
    [
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, "wildcard"),
        ({"resources": ["*"], "verbs": ["get"]}, "wildcard"),
        ({"resources": ["pods"], "verbs": ["*"]}, "wildcard"),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["escalate"]},
            "escalate",
        ),
        ({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]}, "bind"),
        ({"resources": ["users"], "verbs": ["impersonate"]}, "impersonate"),
        ({"resources": ["secrets"], "verbs": ["list"]}, "secrets-read"),
        ({"resources": ["secrets"], "resourceNames": ["tls"], "verbs": ["get"]}, "secrets-read"),
        ({"resources": ["nodes/proxy"], "verbs": ["get"]}, "nodes-proxy"),
        ({"resources": ["serviceaccounts/token"], "verbs": ["create"]}, "token-create"),
        ({"resources": ["pods/exec"], "verbs": ["create"]}, "exec"),
        ({"resources": ["pods/attach"], "verbs": ["get"]}, "exec"),
        (
            {
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingwebhookconfigurations"],
                "verbs": ["patch"],
            },
            "webhook-write",
        ),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
            "rbac-write",
        ),
        (
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["certificatesigningrequests/approval"],
                "verbs": ["update"],
            },
            "csr-approve",
        ),
    ],
)
def test_sensitive_requests_are_refused_even_inside_the_ceiling(rule: dict[str, Any], capability: str) -> None:
    found = check([rule])
    assert capability in [c for c, _ in found], found
    assert capability in SENSITIVE_CAPABILITIES
    assert all("rbac.rules[0]" in reason for _, reason in found)
    # ...and allowed when the operator explicitly allows that capability (and the ceiling covers it).
    assert capability not in [c for c, _ in check([rule], allowed=frozenset(SENSITIVE_CAPABILITIES))]


@pytest.mark.parametrize(
    "rule",
    [
        {"resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"resources": ["secrets"], "verbs": ["create"]},  # writing a secret does not reveal others
        {"resources": ["configmaps"], "resourceNames": ["app-config"], "verbs": ["get", "update"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        {"resources": ["pods/log"], "verbs": ["get"]},
    ],
)
def test_ordinary_requests_pass_a_wide_ceiling(rule: dict[str, Any]) -> None:
    assert check([rule]) == []


@pytest.mark.parametrize(
    ("rule", "ceiling", "covered"),
    [
        (
            {"resources": ["pods"], "verbs": ["get"]},
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            True,
        ),
        (
            {"resources": ["pods"], "verbs": ["delete"]},
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
            False,
        ),
        (
            {"resources": ["pods"], "verbs": ["get"]},
            [{"apiGroups": ["apps"], "resources": ["pods"], "verbs": ["get"]}],
            False,
        ),
        (
            {"resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]},
            [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a", "b"], "verbs": ["get"]}],
            True,
        ),
        # A name-restricted ceiling never covers an unrestricted request.
        (
            {"resources": ["configmaps"], "verbs": ["get"]},
            [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}],
            False,
        ),
        (
            {"resources": ["configmaps"], "resourceNames": ["c"], "verbs": ["get"]},
            [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}],
            False,
        ),
        (
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
            [{"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}],
            True,
        ),
        ({"resources": ["pods"], "verbs": ["get"]}, [{"nonResourceURLs": ["*"], "verbs": ["*"]}], False),
        ({"resources": ["pods"], "verbs": ["get"]}, [], False),
    ],
)
def test_coverage_by_the_ceiling(rule: dict[str, Any], ceiling: list[dict[str, Any]], covered: bool) -> None:
    found = check([rule], ceiling)
    assert (found == []) is covered, found
    if not covered:
        assert found[0][0] == "outside-ceiling"
        assert "outside the grant ceiling" in found[0][1]


def test_cluster_rules_need_operator_permission() -> None:
    rule = {"resources": ["namespaces"], "verbs": ["get"]}
    assert [c for c, _ in check([rule], cluster=True)] == ["cluster-rules"]
    assert check([rule], cluster=True, allow_cluster=True) == []


def test_default_ceiling_refuses_secrets_and_allows_reading_pods() -> None:
    assert check([{"resources": ["pods"], "verbs": ["list"]}], DEFAULT_GRANT_CEILING_RULES) == []
    refused = check([{"resources": ["secrets"], "verbs": ["get"]}], DEFAULT_GRANT_CEILING_RULES)
    assert {c for c, _ in refused} == {"secrets-read", "outside-ceiling"}
