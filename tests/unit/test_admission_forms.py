"""Admission forms and their rendering: registry contract, modes -> actions, selectors, ownership, parameters."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from access_hygiene.k8s.admission import AdmissionParameters, desired_admission
from access_hygiene.reconcile.admission_forms import (
    AUDIT_ONLY,
    FORMS,
    AdmissionForm,
    admission_table,
    automount_mutation,
    compiled_forms,
    exemption_parameters,
)
from access_hygiene.reconcile.audit import load_rules, run_audit
from access_hygiene.reconcile.rules import AuditContext
from access_hygiene.reconcile.snapshot import ClusterSnapshot
from access_hygiene.render.admission import (
    AdmissionConfig,
    OwnerRef,
    namespace_selector,
    render_admission,
    render_rule_policy,
)
from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES
from access_hygiene.settings import OperatorSettings
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1, tzinfo=UTC)
PARAMETERS = AdmissionParameters(now=NOW, owner_exemptions={}, ceiling_rules=list(DEFAULT_GRANT_CEILING_RULES))
DOCS = Path(__file__).resolve().parents[2] / "docs" / "admission.md"


def _titles(rule_id: str) -> tuple[str, str]:
    rule = load_rules()[rule_id]
    return rule.severity.value, rule.title


def test_every_compiled_id_is_a_catalogue_rule() -> None:
    catalogue = load_rules()
    assert set(FORMS) <= set(catalogue)
    assert set(AUDIT_ONLY) <= set(catalogue)
    assert not set(FORMS) & set(AUDIT_ONLY)


def test_at_least_the_issue_rules_are_compiled() -> None:
    for rule_id in ("AH-RBAC-001", "AH-RBAC-002", "AH-RBAC-003", "AH-RBAC-004", "AH-RBAC-016", "AH-RBAC-017",
                    "AH-RBAC-018", "AH-SA-003", "AH-SA-005"):  # fmt: skip
        assert rule_id in FORMS


def test_forms_carry_rule_title_and_fix() -> None:
    forms = compiled_forms(_titles, ("system:kube-",), NOW, {"Deployment.shop.web": "AH-POD"})
    assert [f.rule_id for f in forms] == sorted(FORMS)
    for form in forms:
        assert form.message.startswith(f"{form.rule_id} (")
        assert "Fix: " in form.message
        assert form.fix
        assert form.variables[:3] == (
            ("excludedPrefixes", '["system:kube-"]'),
            ("now", 'timestamp("2026-01-01T00:00:00Z")'),
            ("ownerExemptions", '{"Deployment.shop.web": "AH-POD"}'),
        )


def _form(rule_id: str) -> AdmissionForm:
    return next(f for f in compiled_forms(_titles, (), NOW, {}) if f.rule_id == rule_id)


def test_modes_map_to_actions_and_selectors() -> None:
    config = AdmissionConfig(default_mode="audit", exempt_namespaces=("kube-system",), operator_namespace="ops")
    policy, enforce, audit = render_rule_policy(_form("AH-RBAC-001"), config)
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert enforce["spec"]["validationActions"] == ["Deny"]
    assert audit["spec"]["validationActions"] == ["Warn", "Audit"]
    assert enforce["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"] == [
        {"key": "accesshygiene.io/mode", "operator": "In", "values": ["enforce"]},
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ops"]},
    ]
    assert audit["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0] == {
        "key": "accesshygiene.io/mode", "operator": "NotIn", "values": ["enforce"],
    }  # fmt: skip
    # Cluster-scoped kinds only in the default mode's binding (they carry no namespace label).
    enforce_resources = [r for rule in enforce["spec"]["matchResources"]["resourceRules"] for r in rule["resources"]]
    audit_resources = [r for rule in audit["spec"]["matchResources"]["resourceRules"] for r in rule["resources"]]
    assert enforce_resources == ["rolebindings"]
    assert sorted(audit_resources) == ["clusterrolebindings", "rolebindings"]
    # No paramKind: kube-apiserver 1.36 loses built-in paramKind informers for good (kubernetes#130887).
    assert "paramKind" not in policy["spec"]
    for binding in (enforce, audit):
        assert "paramRef" not in binding["spec"]


def test_default_enforce_flips_the_selectors() -> None:
    config = AdmissionConfig(default_mode="enforce")
    assert namespace_selector(config, "enforce")["matchExpressions"][0] == {
        "key": "accesshygiene.io/mode", "operator": "NotIn", "values": ["audit"],
    }  # fmt: skip
    assert namespace_selector(config, "audit")["matchExpressions"][0]["operator"] == "In"


def test_exempt_label_selector_becomes_a_match_condition() -> None:
    config = AdmissionConfig(exempt_namespace_selector=(("team", "platform"), ("tier", "system")))
    policy = render_rule_policy(_form("AH-POD-001"), config)[0]
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    assert conditions["not-exempt-by-label"] == (
        'namespaceObject == null || !(namespaceObject.metadata.?labels[?"team"].orValue(\'\') == "platform" && '
        'namespaceObject.metadata.?labels[?"tier"].orValue(\'\') == "system")'
    )


def test_everything_is_labelled_owned_and_named_within_limits() -> None:
    owner = OwnerRef("rbac.authorization.k8s.io/v1", "ClusterRole", "access-hygiene-admission", "uid-1")
    settings = OperatorSettings(mode="audit")
    objects = desired_admission(settings, PARAMETERS, owner)
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    }
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(names) == len(set(names))
    for obj in objects:
        meta = obj["metadata"]
        assert len(meta["name"]) <= 63
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "access-hygiene"
        assert meta["labels"]["app.kubernetes.io/component"] == "admission"
        assert meta["ownerReferences"] == [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "name": "access-hygiene-admission",
             "uid": "uid-1"}
        ]  # fmt: skip
    # Each policy comes before its bindings; 2 bindings per rule (1 for cluster-scoped-only rules: the default
    # mode's), one per guard, one for the mutation.
    cluster_only = [f for f in FORMS.values() if not any(r.namespaced for r in f.resources)]
    assert [f.rule_id for f in cluster_only] == ["AH-RBAC-018"]
    assert len(objects) == 3 * len(FORMS) - len(cluster_only) + 2 * 2 + 2
    policies = [o["metadata"]["name"] for o in objects if o["kind"].endswith("Policy")]
    bound = {o["spec"]["policyName"] for o in objects if o["kind"].endswith("Binding")}
    assert set(policies) == bound
    assert desired_admission(settings, PARAMETERS, owner) == objects  # deterministic


def test_mutation_binds_enforced_namespaces_only() -> None:
    objects = render_admission([], [], [automount_mutation()], AdmissionConfig(default_mode="audit"))
    policy, binding = objects
    assert policy["spec"]["mutations"][0]["patchType"] == "JSONPatch"
    assert binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] == ["enforce"]
    assert "validationActions" not in binding["spec"]


def test_exemption_parameters_cover_owned_objects() -> None:
    until = "2999-01-01"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "annotations": {
                "accesshygiene.io/exempt": "AH-POD-003",
                "accesshygiene.io/exempt-owner": "team",
                "accesshygiene.io/exempt-reason": "legacy image",
                "accesshygiene.io/exempt-until": until,
            },
        },
    }
    replica_set = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "shop", "ownerReferences": [{"kind": "Deployment", "name": "web"}]},
    }
    expired = {
        **deployment,
        "metadata": {**deployment["metadata"], "name": "old", "annotations": {
            **deployment["metadata"]["annotations"], "accesshygiene.io/exempt-until": "2001-01-01"}},
    }  # fmt: skip
    snapshot = ClusterSnapshot.from_objects([deployment, replica_set, expired])
    ctx = AuditContext(now=datetime(2026, 1, 1, tzinfo=UTC))
    assert exemption_parameters(snapshot, ctx) == {
        "Deployment.shop.web": "AH-POD-003",
        "ReplicaSet.shop.web-1": "AH-POD-003",
    }


def test_ceiling_rules_are_rendered_into_the_guard() -> None:
    objects = desired_admission(OperatorSettings(), PARAMETERS)
    name = "access-hygiene-accesspolicy-ceiling"
    guard = next(o for o in objects if o["metadata"]["name"] == name)
    ceiling = next(v for v in guard["spec"]["variables"] if v["name"] == "ceiling")["expression"]
    assert '"resources": ["configmaps", "endpoints"' in ceiling
    assert '"resourceNames": []' in ceiling
    empty = AdmissionParameters(now=NOW, owner_exemptions={}, ceiling_rules=[])
    guard = next(o for o in desired_admission(OperatorSettings(), empty) if o["metadata"]["name"] == name)
    assert next(v for v in guard["spec"]["variables"] if v["name"] == "ceiling")["expression"] == "[]"


def test_rule_table_in_docs_is_current() -> None:
    assert admission_table(load_rules()) in DOCS.read_text()


def test_audit_engine_is_the_python_verdict() -> None:
    """The differential test's Python side: run_audit on the object alone plus context, only the rule."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop"},
           "spec": {"hostIPC": True, "containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
    findings = run_audit(ClusterSnapshot.from_objects([pod]), AuditContext(now=PINNED_NOW), only=["AH-POD-002"])
    assert [f.rule_id for f in findings] == ["AH-POD-002"]
