"""Usage aggregation and suggestion: the suggested rules allow every allowed request and nothing else."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.rbac.permissions import PolicyRule
from access_hygiene.engine.usage.aggregation import SubjectUsage, UsageData
from access_hygiene.engine.usage.auditlog import parse_line
from access_hygiene.engine.usage.suggestions import (
    SuggestedRule,
    generated_name_reason,
    non_resource_manifests,
    policy_manifest,
    policy_name,
    suggest,
)
from access_hygiene.models.policy import AccessPolicySpec
from tests.unit.audit_events import SA, event

pytestmark = pytest.mark.unit


def usage_of(*events: dict[str, object], **options: object) -> UsageData:
    usage = UsageData(**options)  # type: ignore[arg-type]
    for body in events:
        parsed = parse_line(json.dumps(body))
        assert isinstance(parsed, list), parsed
        for request in parsed:
            usage.add(request)
    return usage


def for_sa(usage: UsageData, username: str = SA) -> SubjectUsage:
    return usage.subjects[username]


REALISTIC = [
    event("get", "configmaps", name="orders-config"),
    event("get", "configmaps", name="orders-config", at="2026-11-20T10:05:00.000000Z"),
    event("list", "pods"),
    event("watch", "pods", stage="ResponseStarted"),
    event("watch", "pods", stage="ResponseComplete"),
    event("create", "events", name="orders-api.1234"),
    event("create", "events", name="orders-api.5678"),
    event("get", "leases", group="coordination.k8s.io", name="orders-api"),
    event("patch", "leases", group="coordination.k8s.io", name="orders-api"),
    event("list", "nodes", namespace="", allowed=False),
    event("create", "selfsubjectaccessreviews", namespace="", group="authorization.k8s.io"),
    event("get", uri="/api"),
    event("get", uri="/apis/apps/v1"),
    event("list", "pods", user="system:serviceaccount:shop:other"),
]


def test_realistic_app_gets_exactly_its_rules() -> None:
    suggestion = suggest(for_sa(usage_of(*REALISTIC)), "shop", "orders-api")
    assert [r.to_wire() for r in suggestion.rules] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["orders-api"],
         "verbs": ["get", "patch"]},
    ]  # fmt: skip
    assert suggestion.cluster_rules == []
    assert suggestion.non_resource == []
    assert len(suggestion.denied) == 1
    assert suggestion.denied[0].startswith("list nodes cluster-wide (1x")
    assert [d.split(" (")[0] for d in suggestion.default_granted] == [
        "create selfsubjectaccessreviews.authorization.k8s.io cluster-wide", "get /api", "get /apis/apps/v1",
    ]  # fmt: skip
    assert suggestion.requests == 12  # the watch once, not at start and end


def test_manifest_is_a_valid_access_policy() -> None:
    suggestion = suggest(for_sa(usage_of(*REALISTIC)), "shop", "orders-api")
    manifest = policy_manifest(suggestion, "enforce")
    assert manifest["apiVersion"] == "accesshygiene.io/v1alpha1"
    assert manifest["metadata"] == {"name": "orders-api", "namespace": "shop"}
    spec = AccessPolicySpec.model_validate(manifest["spec"])
    assert spec.mode == "enforce"
    assert spec.service_account.name == "orders-api"
    assert len(spec.rbac.rules) == 4
    assert "clusterRules" not in manifest["spec"]["rbac"]


def test_names_threshold() -> None:
    events = [event("get", "configmaps", name=f"cm-{i}") for i in range(6)]
    wide = suggest(for_sa(usage_of(*events)), "shop", "orders-api", names_threshold=5)
    assert [r.to_wire() for r in wide.rules] == [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
    narrow = suggest(for_sa(usage_of(*events)), "shop", "orders-api", names_threshold=6)
    assert narrow.rules[0].resource_names == tuple(f"cm-{i}" for i in range(6))
    never = suggest(for_sa(usage_of(*events[:1])), "shop", "orders-api", names_threshold=0)
    assert never.rules[0].resource_names == ()


def test_named_and_unnamed_verbs_of_one_resource_are_separate_rules() -> None:
    events = [
        event("get", "configmaps", name="a"),
        event("update", "configmaps", name="a"),
        event("list", "configmaps"),
    ]
    rules = suggest(for_sa(usage_of(*events)), "shop", "x").rules
    assert [(r.verbs, r.resource_names) for r in rules] == [(("list",), ()), (("get", "update"), ("a",))]


def test_unnamed_rules_merge_across_resources_with_equal_verbs_only() -> None:
    events = [event(v, r) for r in ("pods", "services") for v in ("list", "watch")] + [event("get", "endpoints")]
    rules = suggest(for_sa(usage_of(*events)), "shop", "x").rules
    assert [(r.resources, r.verbs) for r in rules] == [
        (("endpoints",), ("get",)),
        (("pods", "services"), ("list", "watch")),
    ]


def test_rules_respect_the_schema_limit_on_resources() -> None:
    events = [event("list", f"widgets{i:02d}", group="example.com") for i in range(40)]
    rules = suggest(for_sa(usage_of(*events)), "shop", "x").rules
    assert [len(r.resources) for r in rules] == [32, 8]


def test_subresources_kept_and_apps_group() -> None:
    events = [event("get", "pods", subresource="log", name="p"), event("patch", "deployments", group="apps",
                                                                        subresource="scale", name="web")]  # fmt: skip
    rules = suggest(for_sa(usage_of(*events)), "shop", "x").rules
    assert [r.to_wire() for r in rules] == [
        {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": ["p"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": ["web"], "verbs": ["patch"]},
    ]


def test_other_namespaces_and_cluster_scope_become_cluster_rules() -> None:
    events = [event("get", "configmaps", name="a"), event("get", "configmaps", namespace="billing", name="b"),
              event("list", "namespaces", namespace=""), event("list", "pods", namespace="")]  # fmt: skip
    suggestion = suggest(for_sa(usage_of(*events)), "shop", "x")
    assert [r.to_wire() for r in suggestion.rules] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}
    ]
    assert [r.to_wire() for r in suggestion.cluster_rules] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["b"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["list"]},
    ]
    assert suggestion.other_namespaces == ["billing"]
    assert "clusterRules" in policy_manifest(suggestion)["spec"]["rbac"]


def test_non_resource_urls_get_their_own_cluster_role() -> None:
    suggestion = suggest(for_sa(usage_of(event("get", uri="/metrics"), event("get", uri="/version"))), "shop", "x")
    assert suggestion.non_resource == [("/metrics", ("get",))]
    role, binding = non_resource_manifests(suggestion)
    assert role["rules"] == [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "x", "namespace": "shop"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "shop-x-urls"


def test_denied_then_allowed_is_granted_not_listed() -> None:
    events = [event("list", "secrets", allowed=False), event("list", "secrets")]
    suggestion = suggest(for_sa(usage_of(*events)), "shop", "x")
    assert suggestion.denied == []
    assert [r.resources for r in suggestion.rules] == [("secrets",)]


def test_denied_names_next_to_allowed_ones_are_listed() -> None:
    events = [event("get", "configmaps", name="mine"), event("get", "configmaps", name="theirs", allowed=False),
              event("get", "configmaps", name="mine", allowed=False)]  # fmt: skip
    suggestion = suggest(for_sa(usage_of(*events)), "shop", "x")
    assert [d.split(" (")[0] for d in suggestion.denied] == ["get configmaps theirs in namespace shop"]
    assert suggestion.rules[0].resource_names == ("mine",)


def test_a_denied_create_next_to_an_allowed_one_is_not_listed() -> None:
    # kube-apiserver logs the name of an allowed create (read from the body) but not of a denied one
    events = [event("create", "configmaps", name="scratch"), event("create", "configmaps", allowed=False)]
    assert suggest(for_sa(usage_of(*events)), "shop", "x").denied == []


def test_window_and_since_until() -> None:
    events = [event("get", "pods", name="a", at="2026-11-01T00:00:00Z"), event("get", "pods", name="b",
              at="2026-11-05T00:00:00Z"), event("get", "pods", name="c", at="2026-11-09T00:00:00Z")]  # fmt: skip
    usage = usage_of(*events, since=1793750400.0, until=1794355200.0)  # 2026-11-04 .. 2026-11-11
    assert usage.outside_window == 1
    assert for_sa(usage).allowed[("get", "", "pods", "", "shop", "")].names == {"b", "c"}
    assert usage.window_seconds == 4 * 86400
    assert not usage.judgeable  # default minimum: 7 days
    assert usage_of(*events).judgeable


def test_name_cap_overflow_forgets_names_and_widens() -> None:
    usage = usage_of(*[event("get", "pods", name=f"p{i}") for i in range(10)], name_cap=4)
    record = for_sa(usage).allowed[("get", "", "pods", "", "shop", "")]
    assert (record.overflow, record.names, record.count) == (True, set(), 10)
    assert suggest(for_sa(usage), "shop", "x", names_threshold=100, name_cap=4).rules[0].resource_names == ()


def test_wanted_filter_keeps_only_those_identities_but_window_counts_all() -> None:
    usage = usage_of(*REALISTIC, wanted={SA}.__contains__)
    assert list(usage.subjects) == [SA]
    assert usage.requests == 13


def test_policy_name_is_a_dns_label() -> None:
    assert policy_name("orders.api_v2") == "orders-api-v2"
    assert len(policy_name("a" * 200)) == 63
    assert math.isinf(UsageData().first)


# --- generated and versioned names never become resourceNames -------------------------------------------

HELM_CLIENT = [  # `helm upgrade web` three times with the secrets storage driver, as its audit events show it
    event("list", "secrets"),
    *[event(verb, "secrets", name=f"sh.helm.release.v1.web.v{n}") for n in (1, 2, 3) for verb in ("get", "update")],
    event("create", "secrets", name="sh.helm.release.v1.web.v3"),
]


def test_helm_release_secrets_are_not_pinned_and_the_rule_says_why() -> None:
    suggestion = suggest(for_sa(usage_of(*HELM_CLIENT)), "shop", "orders-api")
    [rule] = suggestion.rules
    assert rule.to_wire() == {"apiGroups": [""], "resources": ["secrets"],
                              "verbs": ["get", "list", "create", "update"]}  # fmt: skip
    [note] = rule.notes
    assert "sh.helm.release.v1.web.v1" in note
    assert "Helm release" in note
    assert "every secrets object in namespace shop" in note
    assert PolicyRule.parse(rule.to_wire()).allows("get", "", "secrets", "", "sh.helm.release.v1.web.v4")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("sh.helm.release.v1.web.v1", "Helm release"),
        ("sh.helm.release.v1.my.app.v12", "Helm release"),
        ("web-7d4b9c8f6d-x2k9q", "generated"),  # Deployment pod: pod-template-hash, generateName suffix
        ("web-7d4b9c8f6d-bxkzq", "generated"),  # ... whose 5 random characters happen to hold no digit
        ("web-7d4b9c8f6d", "generated"),  # its ReplicaSet
        ("batch-worker-x7q2z", "generated"),  # generateName (a Job's pod, an EndpointSlice)
        ("app-config-7g5k2h9m4t", "generated"),  # kustomize configMapGenerator hash suffix
        ("nightly-backup-29413440", "timestamp"),  # a CronJob's Job
        ("orders-api.18f2a6c1b3d4e5f6", "timestamp"),  # an Event
    ],
)
def test_generated_names_are_recognised(name: str, kind: str) -> None:
    reason = generated_name_reason(name)
    assert reason is not None, name
    assert kind in reason, (name, reason)


@pytest.mark.parametrize(
    "name",
    ["orders-config", "orders-api", "web-https", "kube-root-ca.crt", "db-0", "redis-2", "cm-5", "sh.helm.release",
     "leader-election", "v1", "tls-certs", "app-v2", "release-2024"],
)  # fmt: skip
def test_stable_names_are_not_taken_for_generated(name: str) -> None:
    assert generated_name_reason(name) is None


def test_versioned_siblings_are_not_pinned_but_stable_names_still_are() -> None:
    events = [
        event("get", "configmaps", name="rules-v1"),
        event("get", "configmaps", name="rules-v2"),
        event("get", "leases", group="coordination.k8s.io", name="orders-api"),
        event("get", "pods", name="web-7d4b9c8f6d-x2k9q"),
        event("get", "statefulsets", group="apps", name="db"),
        event("get", "pods", name="db-0", at="2026-11-20T10:00:01.000000Z"),
    ]
    suggestion = suggest(for_sa(usage_of(*events)), "shop", "orders-api")
    by_resource = {(r.resources, r.resource_names): r for r in suggestion.rules}
    assert set(by_resource) == {(("configmaps", "pods"), ()), (("statefulsets",), ("db",)),
                                (("leases",), ("orders-api",))}  # fmt: skip
    widened = by_resource[(("configmaps", "pods"), ())]
    assert len(widened.notes) == 2
    assert any("rules-v1, rules-v2" in n and "versioned" in n for n in widened.notes)
    assert any("web-7d4b9c8f6d-x2k9q" in n and "generated" in n for n in widened.notes)
    assert by_resource[(("leases",), ("orders-api",))].notes == ()


def test_generated_names_in_other_namespaces_widen_the_cluster_rule() -> None:
    events = [event("get", "secrets", namespace="web", name=f"sh.helm.release.v1.web.v{n}") for n in (1, 2)]
    suggestion = suggest(for_sa(usage_of(*events)), "shop", "orders-api")
    [rule] = suggestion.cluster_rules
    assert rule.resource_names == ()
    [note] = rule.notes
    assert "clusterRules" in note
    assert "every namespace" in note


# --- property: exactly what was used ---------------------------------------------------------------

VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
request_strategy = st.tuples(
    st.sampled_from(VERBS),
    st.sampled_from(["", "apps", "coordination.k8s.io"]),
    st.sampled_from(["pods", "configmaps", "leases", "nodes"]),
    st.sampled_from(["", "", "log", "status"]),
    st.sampled_from(["shop", "shop", "billing", ""]),
    st.sampled_from(["", "a", "b", "c", "d"]),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(request_strategy, max_size=30), st.integers(min_value=0, max_value=3))
def test_suggestion_allows_every_allowed_request_and_nothing_unused(
    requests: list[tuple[str, str, str, str, str, str, bool]], threshold: int
) -> None:
    events = [event(verb, resource, group=group, subresource=sub, namespace=ns, name=name, allowed=allowed)
              for verb, group, resource, sub, ns, name, allowed in requests]  # fmt: skip
    usage = usage_of(*events)
    if SA not in usage.subjects:
        return
    suggestion = suggest(for_sa(usage), "shop", "orders-api", names_threshold=threshold)

    def parsed(rules: list[SuggestedRule]) -> list[PolicyRule]:
        return [PolicyRule.parse(r.to_wire()) for r in rules]

    namespaced, cluster = parsed(suggestion.rules), parsed(suggestion.cluster_rules)
    used: set[tuple[str, str, str, str]] = set()  # (verb, group, resource[/sub], name)
    for verb, group, resource, sub, ns, name, allowed in requests:
        if not allowed:
            continue
        rules = namespaced + cluster if ns == "shop" else cluster
        assert any(r.allows(verb, group, resource, sub, name) for r in rules), (verb, group, resource, sub, ns, name)
        used.add((verb, group, f"{resource}/{sub}" if sub else resource, name))
    for rule in suggestion.rules + suggestion.cluster_rules:
        for verb, group, resource, name in rule.requests():
            # every (verb, resource) a rule grants was used; a named rule's every name was used with that verb
            assert any(u[:3] == (verb, group, resource) and (not name or u[3] == name) for u in used), rule
