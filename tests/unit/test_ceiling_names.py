"""Errors a person can act on: unknown verbs and resources the API server does not serve are named as such."""

from typing import Any

import pytest

from access_hygiene.engine.rbac.grant_ceiling import (
    KNOWN_VERBS,
    ServedResources,
    check_grant_ceiling,
    requested_resources,
    unknown_verbs,
    unserved_resources,
)
from access_hygiene.models.policy import AccessPolicySpec, PolicyRule, resolve_policy
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES

pytestmark = pytest.mark.unit
META = {"name": "app", "namespace": "ns", "uid": "u"}
# A small excerpt of what a 1.36 API server serves (the cluster test reads the real one).
SERVED: ServedResources = {
    "": {"configmaps", "pods", "pods/log", "pods/exec", "secrets", "services", "serviceaccounts/token", "events"},
    "apps": {"deployments", "deployments/scale", "statefulsets"},
    "events.k8s.io": {"events"},
}


def rule(**fields: Any) -> PolicyRule:
    return PolicyRule.model_validate(fields)


def check(rules: list[dict[str, Any]], served: ServedResources | None = SERVED) -> list[tuple[str, str]]:
    policy = resolve_policy(META, AccessPolicySpec.model_validate({"rbac": {"rules": rules}}))
    found = check_grant_ceiling(policy, DEFAULT_GRANT_CEILING_RULES, served=served)
    return [(v.capability, v.reason) for v in found]


@pytest.mark.parametrize(
    ("verbs", "expected"),
    [
        (["gett"], ["unknown verb 'gett' (did you mean get?)"]),
        (["get", "lst", "lst"], ["unknown verb 'lst' (did you mean list?)"]),
        (["frobnicate"], ["unknown verb 'frobnicate'"]),
        (["get", "list", "watch", "*", "bind", "escalate", "impersonate", "approve", "use"], []),
    ],
)
def test_unknown_verbs(verbs: list[str], expected: list[str]) -> None:
    assert unknown_verbs(rule(resources=["pods"], verbs=verbs)) == expected


def test_every_api_request_verb_is_known() -> None:
    api_verbs = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    assert api_verbs <= KNOWN_VERBS


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"resources": ["configmapz"]},
         ["resource 'configmapz' is not served by the API server (did you mean configmaps?)"]),
        ({"resources": ["pods/exce"]},
         ["resource 'pods/exce' is not served by the API server (did you mean pods/exec?)"]),
        ({"resources": ["deployments"]},
         ["resource 'deployments' is not served by the API server (it is served in apiGroup 'apps')"]),
        ({"apiGroups": ["app"], "resources": ["deployments", "statefulsets"]},
         ["apiGroup 'app' is not served by the API server (did you mean apps?)"] * 2),
        ({"apiGroups": ["apps"], "resources": ["deploymentz"]},
         ["resource 'deploymentz' is not served by the API server in apiGroup 'apps' (did you mean deployments?)"]),
        ({"resources": ["configmaps", "pods/log", "*"]}, []),
        ({"apiGroups": ["*"], "resources": ["whatever"]}, []),
        ({"apiGroups": ["apps"], "resources": ["*/scale"]}, []),
    ],
)  # fmt: skip
def test_unserved_resources(fields: dict[str, Any], expected: list[str]) -> None:
    found = unserved_resources(rule(verbs=["get"], **fields), SERVED)
    assert [reason for _, _, reason in found] == expected


def test_policy_with_typos_is_refused_with_the_typos_named_not_the_ceiling() -> None:
    found = check([{"resources": ["configmapz"], "verbs": ["gett"]}])
    assert found == [
        ("unknown-verb", "rbac.rules[0]: unknown verb 'gett' (did you mean get?)"),
        ("unknown-resource",
         "rbac.rules[0]: resource 'configmapz' is not served by the API server (did you mean configmaps?)"),
    ]  # fmt: skip


def test_a_known_part_of_the_same_rule_is_still_checked_against_the_ceiling() -> None:
    found = check([{"resources": ["configmapz", "pods"], "verbs": ["get", "delete"]}])
    capabilities = [capability for capability, _ in found]
    assert capabilities == ["unknown-resource", "outside-ceiling"]
    assert found[1][1] == 'rbac.rules[0]: outside the grant ceiling: delete pods (apiGroup "")'


def test_an_unserved_group_is_named_once() -> None:
    found = check([{"apiGroups": ["app"], "resources": ["deployments", "statefulsets"], "verbs": ["get"]}])
    assert found == [("unknown-resource", "rbac.rules[0]: apiGroup 'app' is not served by the API server "
                                          "(did you mean apps?)")]  # fmt: skip


def test_without_discovery_unknown_resources_read_as_outside_the_ceiling_but_verbs_are_still_named() -> None:
    found = check([{"resources": ["configmapz"], "verbs": ["gett", "get"]}], served=None)
    assert found == [
        ("unknown-verb", "rbac.rules[0]: unknown verb 'gett' (did you mean get?)"),
        ("outside-ceiling", 'rbac.rules[0]: outside the grant ceiling: get configmapz (apiGroup "")'),
    ]


def test_a_valid_policy_passes_with_discovery() -> None:
    assert check([{"resources": ["configmaps"], "resourceNames": ["cfg"], "verbs": ["get"]}]) == []


def test_requested_resources_are_what_discovery_must_know() -> None:
    spec = {"rbac": {"rules": [{"apiGroups": ["", "apps"], "resources": ["pods", "*/scale"], "verbs": ["get"]},
                               {"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["get"]}],
                     "clusterRules": [{"resources": ["nodes"], "verbs": ["get"]}]}}  # fmt: skip
    policy = resolve_policy(META, AccessPolicySpec.model_validate(spec))
    assert requested_resources(policy) == {("", "pods"), ("apps", "pods"), ("", "nodes")}
