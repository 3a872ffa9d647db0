"""Namespace hygiene planning: what enforce mode writes (only what is missing, never user objects),
controls, breakage forecast, the summary annotation; planning converges (apply, re-plan: nothing)."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.controls import CONTROLS, namespace_controls
from access_hygiene.engine.ground.network_policies import dns_allowed
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, name_of, namespace_of
from access_hygiene.engine.planning.namespace_plan import (
    SUMMARY_ANNOTATION,
    BreakageForecast,
    NamespacePlan,
    namespace_summary,
    plan_namespace,
)
from access_hygiene.models.policy import AccessPolicySpec, resolve_policy
from access_hygiene.render.namespace import (
    DEFAULT_DENY_NAME,
    DNS_ALLOW_NAME,
    dns_pod_selector,
    render_default_sa_patch,
    render_namespace_controls,
)
from access_hygiene.render.policy import ClusterFacts, render_policy
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "hygiene" / "namespace_shop.yaml"
NOW = PINNED_NOW  # the instant the fixtures are written for
CTX = AuditContext(now=NOW)
MANAGED = {"app.kubernetes.io/managed-by": "access-hygiene"}


def load() -> ClusterSnapshot:
    return ClusterSnapshot.from_objects(yaml.safe_load_all(FIXTURE.read_text()))


def namespace_obj(snapshot: ClusterSnapshot, name: str = "shop") -> dict[str, Any]:
    return next(ns for ns in snapshot.namespaces if name_of(ns) == name)


def applied(snapshot: ClusterSnapshot, manifests: list[dict[str, Any]]) -> ClusterSnapshot:
    """The snapshot as it would look after server-side applying the manifests (merge per object)."""
    result = copy.deepcopy(snapshot)
    for manifest in manifests:
        pool = result.service_accounts if manifest["kind"] == "ServiceAccount" else result.network_policies
        key = (namespace_of(manifest), name_of(manifest))
        old = next((o for o in pool if (namespace_of(o), name_of(o)) == key), None)
        if old is not None:
            pool.remove(old)
            merged = {**old, **copy.deepcopy(manifest)}
            merged["metadata"] = {**old.get("metadata", {}), **manifest["metadata"]}
            pool.append(merged)
        else:
            pool.append(copy.deepcopy(manifest))
    return result


def pruned(snapshot: ClusterSnapshot, plan: NamespacePlan) -> ClusterSnapshot:
    gone = {(ref.namespace, ref.name) for ref in plan.prune}
    result = copy.deepcopy(snapshot)
    result.network_policies = [p for p in result.network_policies if (namespace_of(p), name_of(p)) not in gone]
    return result


def described(plan: NamespacePlan) -> list[str]:
    return [f"{m['kind']}/{m['metadata']['name']}" for m in plan.apply]


def test_plan_for_a_fresh_namespace() -> None:
    snapshot = load()
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    assert not plan.exempt
    assert described(plan) == [
        "ServiceAccount/default",
        f"NetworkPolicy/{DEFAULT_DENY_NAME}",
        f"NetworkPolicy/{DNS_ALLOW_NAME}",
    ]
    assert plan.apply[0] == render_default_sa_patch("shop")
    assert plan.apply[1:] == render_namespace_controls("shop", "6f1c-ns", "kube-system", {"k8s-app": "kube-dns"})
    assert plan.prune == []
    ids = {f.rule_id for f in plan.findings}
    assert {"AH-SA-001", "AH-SA-003", "AH-SA-006", "AH-NET-001", "AH-NET-002"} <= ids
    assert all("shop" in (f.namespace, f.object.namespace) for f in plan.findings)


def test_forecast_names_the_pods_that_would_break() -> None:
    snapshot = load()
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    forecast = sorted((f.pod, f.service_account, f.impact) for f in plan.forecast)
    assert forecast == [
        ("Deployment/cart", "default", "loses-api-egress"),
        ("Deployment/cart", "default", "loses-ingress"),
        ("Deployment/cart", "default", "loses-token"),
        ("Deployment/mailer", "mailer", "loses-dns"),
    ]
    reasons = {f.impact: f.reason for f in plan.forecast if f.pod == "Deployment/cart"}
    assert "RoleBinding/default-view" in reasons["loses-token"]
    assert "8080/TCP" in reasons["loses-ingress"]
    assert all(isinstance(f, BreakageForecast) and f.namespace == "shop" for f in plan.forecast)


def test_compliant_namespace_is_a_no_op() -> None:
    snapshot = load()
    first = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    after = applied(snapshot, first.apply)
    second = plan_namespace(namespace_obj(after), after, CTX)
    assert second.apply == []
    assert second.prune == []
    assert second.forecast == []
    assert not {"AH-SA-001", "AH-NET-001", "AH-NET-002"} & {f.rule_id for f in second.findings}
    # user objects are exactly as they were
    user = [p for p in after.network_policies if name_of(p) == "team-allow-web"]
    assert user == [p for p in snapshot.network_policies if name_of(p) == "team-allow-web"]


def test_drift_is_repaired_and_only_the_drifted_object_is_written() -> None:
    snapshot = load()
    after = applied(snapshot, plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply)
    flipped = applied(after, [{**render_default_sa_patch("shop"), "automountServiceAccountToken": True}])
    assert described(plan_namespace(namespace_obj(flipped), flipped, CTX)) == ["ServiceAccount/default"]
    deny = next(p for p in after.network_policies if name_of(p) == DEFAULT_DENY_NAME)
    deny["spec"]["policyTypes"] = ["Ingress"]
    assert described(plan_namespace(namespace_obj(after), after, CTX)) == [f"NetworkPolicy/{DEFAULT_DENY_NAME}"]


def test_same_named_user_object_is_a_conflict_not_an_apply() -> None:
    snapshot = load()
    user_deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_DENY_NAME, "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "x"}}},
    }
    snapshot.add(user_deny)
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    assert described(plan) == ["ServiceAccount/default", f"NetworkPolicy/{DNS_ALLOW_NAME}"]
    conflicts = [f for f in plan.findings if f.rule_id == "AH-GOV-004"]
    assert [f.object.name for f in conflicts] == [DEFAULT_DENY_NAME]


def test_user_default_deny_is_respected() -> None:
    snapshot = load()
    snapshot.add(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "deny-in", "namespace": "shop"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
        }
    )
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    deny = next(m for m in plan.apply if m["metadata"]["name"] == DEFAULT_DENY_NAME)
    assert deny["spec"]["policyTypes"] == ["Egress"]  # ingress already denied by the user's policy
    assert "loses-ingress" not in {f.impact for f in plan.forecast}


def exemption(rules: str, until: str = "2030-12-31") -> dict[str, str]:
    return {
        "accesshygiene.io/exempt": rules,
        "accesshygiene.io/exempt-owner": "platform",
        "accesshygiene.io/exempt-reason": "migration",
        "accesshygiene.io/exempt-until": until,
    }


@pytest.mark.parametrize(
    ("annotations", "exempt", "writes"),
    [
        (exemption("*"), True, []),
        (exemption("*", until="2030-06-01"), False, ["ServiceAccount/default", f"NetworkPolicy/{DEFAULT_DENY_NAME}",
                                                     f"NetworkPolicy/{DNS_ALLOW_NAME}"]),
        (exemption("AH-NET-002"), False, ["ServiceAccount/default", f"NetworkPolicy/{DEFAULT_DENY_NAME}"]),
        (exemption("AH-SA-001,AH-NET"), False, []),
        ({"accesshygiene.io/exempt": "*"}, False, ["ServiceAccount/default", f"NetworkPolicy/{DEFAULT_DENY_NAME}",
                                                   f"NetworkPolicy/{DNS_ALLOW_NAME}"]),  # malformed: ignored
    ],
)  # fmt: skip
def test_exemptions_shape_the_plan(annotations: dict[str, str], exempt: bool, writes: list[str]) -> None:
    snapshot = load()
    namespace_obj(snapshot)["metadata"]["annotations"] = annotations
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    assert plan.exempt is exempt
    assert described(plan) == writes
    if writes == [] or "AH-NET-002" in annotations["accesshygiene.io/exempt"]:
        assert "loses-dns" not in {f.impact for f in plan.forecast}


def test_partial_exemption_renders_ingress_only() -> None:
    snapshot = load()
    namespace_obj(snapshot)["metadata"]["annotations"] = exemption("AH-NET-002")
    deny = plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply[1]
    assert deny["spec"]["policyTypes"] == ["Ingress"]


def test_config_exempt_namespace_is_untouched_and_newly_exempt_prunes_ours() -> None:
    snapshot = load()
    enforced = applied(snapshot, plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply)
    ctx = AuditContext(now=NOW, exempt_namespaces=frozenset({"shop"}))
    plan = plan_namespace(namespace_obj(enforced), enforced, ctx)
    assert plan.exempt
    assert plan.apply == []
    assert plan.forecast == []
    assert sorted(ref.name for ref in plan.prune) == [DNS_ALLOW_NAME, DEFAULT_DENY_NAME]
    assert plan_namespace(namespace_obj(snapshot), snapshot, ctx).prune == []  # nothing of ours to remove


def test_terminating_namespace_gets_no_writes() -> None:
    snapshot = load()
    namespace_obj(snapshot)["metadata"]["deletionTimestamp"] = "2030-06-15T11:00:00Z"
    assert plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply == []


def test_namespace_controls_before_and_after() -> None:
    snapshot = load()
    before = namespace_controls(snapshot, CTX)
    assert before == {
        ("shop", "default-sa-automount-off"): False,
        ("shop", "default-deny-ingress"): False,
        ("shop", "default-deny-egress"): False,
        ("shop", "dns-egress-allowed"): True,  # nothing isolates egress yet
        ("shop", "no-pods-on-default-sa"): False,
    }
    after = applied(snapshot, plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply)
    controls = namespace_controls(after, CTX)
    assert {c: controls[("shop", c)] for c in CONTROLS} == {
        "default-sa-automount-off": True,
        "default-deny-ingress": True,
        "default-deny-egress": True,
        "dns-egress-allowed": True,
        "no-pods-on-default-sa": False,
    }
    without_dns = copy.deepcopy(after)
    without_dns.network_policies = [p for p in without_dns.network_policies if name_of(p) != DNS_ALLOW_NAME]
    assert namespace_controls(without_dns, CTX)[("shop", "dns-egress-allowed")] is False


def test_exempt_namespaces_have_no_controls_unless_asked() -> None:
    snapshot = ClusterSnapshot(namespaces=[{"kind": "Namespace", "metadata": {"name": "kube-system"}}])
    assert namespace_controls(snapshot, CTX) == {}
    assert len(namespace_controls(snapshot, CTX, include_exempt=True)) == len(CONTROLS)


def test_summary_annotation_format() -> None:
    snapshot = load()
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    summary = namespace_summary(plan, namespace_controls(snapshot, CTX))
    assert list(summary) == [SUMMARY_ANNOTATION]
    value = json.loads(summary[SUMMARY_ANNOTATION])
    assert value["v"] == 1
    assert value["exempt"] is False
    assert value["controls"] == {
        "default-deny-egress": False,
        "default-deny-ingress": False,
        "default-sa-automount-off": False,
        "dns-egress-allowed": True,
        "no-pods-on-default-sa": False,
    }
    assert set(value["violations"]) == {"critical", "high", "medium", "low"}
    assert sum(value["violations"].values()) == len(plan.findings)
    assert value["pending"] == 3
    assert value["forecast"] == 4
    assert 0 <= value["score"] <= 20
    assert summary[SUMMARY_ANNOTATION] == json.dumps(value, sort_keys=True, separators=(",", ":"))
    # deterministic: the same state gives the same bytes (no churn of writes)
    assert (
        namespace_summary(plan_namespace(namespace_obj(snapshot), snapshot, CTX), namespace_controls(snapshot, CTX))
        == summary
    )


def test_summary_of_an_exempt_namespace_has_no_score() -> None:
    ctx = AuditContext(now=NOW, exempt_namespaces=frozenset({"shop"}))
    snapshot = load()
    plan = plan_namespace(namespace_obj(snapshot), snapshot, ctx)
    value = json.loads(namespace_summary(plan, namespace_controls(snapshot, ctx))[SUMMARY_ANNOTATION])
    assert value["exempt"] is True
    assert value["controls"] == {}
    assert "score" not in value


# --- network.dns: false is effective: the namespace DNS allow leaves out those policies' pods (issue 25, item 4) ---


def generated_network_policy(name: str, network: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """The NetworkPolicy the operator renders for an AccessPolicy `name` in shop, as live."""
    meta = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "generation": 1}
    policy = resolve_policy(meta, AccessPolicySpec.model_validate({"network": network, **spec}))
    return next(m for m in render_policy(policy, ClusterFacts()) if m["kind"] == "NetworkPolicy")


def app(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name}


def test_the_dns_allow_leaves_out_the_pods_of_policies_that_turn_dns_off() -> None:
    snapshot = load()
    for generated in (
        generated_network_policy("quiet", {"dns": False}),
        generated_network_policy("chatty", {"dns": True}),
        generated_network_policy("db", {"dns": False}, podSelector={"matchLabels": {"tier": "db"}}),
        generated_network_policy("pair", {"dns": False}, podSelector={"matchLabels": {"app": "pair", "tier": "web"}}),
    ):
        snapshot.add(generated)
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    dns = next(m for m in plan.apply if name_of(m) == DNS_ALLOW_NAME)
    assert dns["spec"]["podSelector"] == {
        "matchExpressions": [
            {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["quiet"]},
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
        ]
    }
    after = applied(snapshot, plan.apply)
    # Judged by the NetworkPolicy semantics the hygiene rules use (every policy in the namespace, added up):
    assert not dns_allowed(after, CTX, "shop", app("quiet"))
    assert not dns_allowed(after, CTX, "shop", {"tier": "db", "other": "x"})
    assert dns_allowed(after, CTX, "shop", app("chatty"))  # its own NetworkPolicy allows DNS
    assert dns_allowed(after, CTX, "shop", app("no-policy"))
    assert dns_allowed(after, CTX, "shop", {})
    # A label combination cannot be left out exactly (the policy reports it: DNSStillAllowed).
    assert dns_allowed(after, CTX, "shop", {"app": "pair", "tier": "web"})
    again = plan_namespace(namespace_obj(after), after, CTX)
    assert again.apply == []  # converged


def test_a_policy_whose_network_policy_is_not_in_place_keeps_dns() -> None:
    """An audit-mode or refused policy writes no NetworkPolicy: its pods keep the namespace's DNS allow."""
    snapshot = load()
    plan = plan_namespace(namespace_obj(snapshot), snapshot, CTX)
    dns = next(m for m in plan.apply if name_of(m) == DNS_ALLOW_NAME)
    assert dns["spec"]["podSelector"] == {}
    user_copy = generated_network_policy("quiet", {"dns": False})
    del user_copy["metadata"]["ownerReferences"]  # not generated for an AccessPolicy: not a declaration of ours
    snapshot.add(user_copy)
    dns = next(m for m in plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply if name_of(m) == DNS_ALLOW_NAME)
    assert dns["spec"]["podSelector"] == {}


def test_turning_dns_back_on_restores_the_namespace_dns_allow() -> None:
    snapshot = load()
    snapshot.add(generated_network_policy("quiet", {"dns": False}))
    after = applied(snapshot, plan_namespace(namespace_obj(snapshot), snapshot, CTX).apply)
    assert not dns_allowed(after, CTX, "shop", app("quiet"))
    turned_on = copy.deepcopy(after)
    turned_on.network_policies = [p for p in turned_on.network_policies if name_of(p) != "access-hygiene-quiet"]
    turned_on.add(generated_network_policy("quiet", {"dns": True}))
    plan = plan_namespace(namespace_obj(turned_on), turned_on, CTX)
    assert [m["spec"]["podSelector"] for m in plan.apply if name_of(m) == DNS_ALLOW_NAME] == [{}]


def test_only_one_label_selectors_can_be_left_out() -> None:
    assert dns_pod_selector([]) == {}
    with pytest.raises(ValueError, match="one-label"):
        dns_pod_selector([{"a": "1", "b": "2"}])


# --- property: whatever the starting state, apply + re-plan converges and never touches user objects ---

automount = st.sampled_from([None, True, False])
labels = st.sampled_from([{}, {"app": "a"}, {"app": "b"}])


@st.composite
def namespaces(draw: st.DrawFn) -> ClusterSnapshot:
    ns = "n1"
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "uid": "u"}}]
    if draw(st.booleans()):
        sa: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns},
        }
        setting = draw(automount)
        if setting is not None:
            sa["automountServiceAccountToken"] = setting
        objects.append(sa)
    for index in range(draw(st.integers(0, 3))):  # user policies, some with our names, some default-deny
        name = draw(st.sampled_from([f"user-{index}", DEFAULT_DENY_NAME, DNS_ALLOW_NAME]))
        spec: dict[str, Any] = {"podSelector": {"matchLabels": draw(labels)}}
        spec["policyTypes"] = draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
        managed = name != f"user-{index}" and draw(st.booleans())
        metadata: dict[str, Any] = {"name": name, "namespace": ns, **({"labels": dict(MANAGED)} if managed else {})}
        objects.append(
            {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}
        )
    for index in range(draw(st.integers(0, 3))):
        spec = {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}
        if draw(st.booleans()):
            spec["serviceAccountName"] = "app"
        metadata = {"name": f"p{index}", "namespace": ns, "labels": draw(labels)}
        objects.append({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
    if draw(st.booleans()):
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}})
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objects:  # names are unique per kind
        by_name[(obj["kind"], name_of(obj))] = obj
    return ClusterSnapshot.from_objects(by_name.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot=namespaces(), exempt_rules=st.sampled_from([None, "*", "AH-NET-001", "AH-NET-002", "AH-SA-001"]))
def test_planning_converges_and_spares_user_objects(snapshot: ClusterSnapshot, exempt_rules: str | None) -> None:
    if exempt_rules:
        namespace_obj(snapshot, "n1")["metadata"]["annotations"] = exemption(exempt_rules)
    user_before = [copy.deepcopy(p) for p in snapshot.network_policies if p["metadata"].get("labels") != MANAGED]
    plan = plan_namespace(namespace_obj(snapshot, "n1"), snapshot, CTX)
    for manifest in plan.apply:
        assert manifest["kind"] in ("ServiceAccount", "NetworkPolicy")
        assert manifest["kind"] == "ServiceAccount" or manifest["metadata"]["labels"] == MANAGED
        assert all(not (name_of(manifest) == name_of(u) and manifest["kind"] == "NetworkPolicy") for u in user_before)
    after = pruned(applied(snapshot, plan.apply), plan)
    again = plan_namespace(namespace_obj(after, "n1"), after, CTX)
    assert again.apply == []
    assert again.prune == []
    assert [p for p in after.network_policies if p["metadata"].get("labels") != MANAGED] == user_before
