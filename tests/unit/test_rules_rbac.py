"""AH-RBAC-001..029: every rule flags exactly the expected (object, subject, severity) on its bad fixture
and nothing on its good fixture (near misses: named grants, bootstrap objects, excluded subjects, ...)."""

import copy
from pathlib import Path

import pytest
import yaml

from access_hygiene.reconcile.audit import load_rules, run_audit
from access_hygiene.reconcile.rules import AuditContext
from access_hygiene.reconcile.snapshot import ClusterSnapshot, name_of, namespace_of
from tests.unit.rule_fixtures import describe, load

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "rbac"
RBAC_RULES = [f"AH-RBAC-{n:03d}" for n in [*range(1, 23), *range(24, 30)]]
# Rules that need audit-log usage data; their fixtures are in tests/unit/test_usage_unused.py.
USAGE_RULES = ["AH-RBAC-023"]


def test_catalogue_is_complete() -> None:
    catalogue = load_rules()
    assert [rule_id for rule_id in catalogue if rule_id.startswith("AH-RBAC-")] == sorted(RBAC_RULES + USAGE_RULES)
    assert sorted(p.name for p in FIXTURES.iterdir()) == RBAC_RULES


@pytest.mark.parametrize("rule_id", RBAC_RULES)
def test_bad_fixture_is_flagged(rule_id: str) -> None:
    expected = yaml.safe_load((FIXTURES / rule_id / "expected.yaml").read_text())
    findings = run_audit(load(FIXTURES / rule_id / "bad.yaml"), AuditContext(), only=[rule_id])
    assert sorted(describe(f) for f in findings) == sorted(expected)


@pytest.mark.parametrize("rule_id", RBAC_RULES)
def test_good_fixture_is_clean(rule_id: str) -> None:
    findings = run_audit(load(FIXTURES / rule_id / "good.yaml"), AuditContext(), only=[rule_id])
    assert [describe(f) for f in findings] == []


def test_excluded_prefixes_are_overridable() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-001" / "good.yaml")
    ctx = AuditContext(excluded_subject_prefixes=())
    findings = run_audit(snapshot, ctx, only=["AH-RBAC-001"])
    assert [describe(f) for f in findings] == [
        "ClusterRoleBinding//scheduler-admin|User:system:kube-scheduler|critical"
    ]


def test_privileged_namespace_raises_severity() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-013" / "bad.yaml")
    ctx = AuditContext(privileged_namespaces=frozenset({"team"}))
    severities = {f.object.name: f.severity.value for f in run_audit(snapshot, ctx, only=["AH-RBAC-013"])}
    assert severities == {"alice-execs": "critical", "bob-attaches": "high"}


def test_superuser_binding_is_reported_once() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-001" / "bad.yaml")
    rule_ids = {f.rule_id for f in run_audit(snapshot, AuditContext()) if f.object.kind.endswith("Binding")}
    assert rule_ids == {"AH-RBAC-001"}


def test_findings_are_deterministic() -> None:
    objects = [
        doc for rule_id in RBAC_RULES for doc in yaml.safe_load_all((FIXTURES / rule_id / "bad.yaml").read_text())
    ]
    first = run_audit(ClusterSnapshot.from_objects(objects), AuditContext())
    second = run_audit(ClusterSnapshot.from_objects(list(reversed(objects))), AuditContext())
    assert first == second
    assert [f.severity.rank for f in first] == sorted((f.severity.rank for f in first), reverse=True)


def test_prefix_selection_and_unknown_rule() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-009" / "bad.yaml")
    assert {f.rule_id for f in run_audit(snapshot, AuditContext(), only=["ah-rbac-00"])} >= {"AH-RBAC-009"}
    with pytest.raises(ValueError, match="AH-NOPE"):
        run_audit(snapshot, AuditContext(), only=["AH-NOPE"])


# --- issue 25 item 5: Role vs ClusterRole by kind, not by metadata.namespace ------------------------------

WEBHOOK_ADMIN = {
    "apiVersion": "rbac.authorization.k8s.io/v1",
    "kind": "ClusterRole",
    "metadata": {"name": "webhook-admin", "namespace": "kube-system"},  # Helm charts set one; kube-apiserver drops it
    "rules": [
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": ["*"]}
    ],
}


def test_snapshot_stores_a_cluster_scoped_object_without_its_namespace() -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "b", "namespace": "team"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "webhook-admin"},
    }
    snapshot = ClusterSnapshot.from_objects([WEBHOOK_ADMIN, binding])
    assert namespace_of(snapshot.cluster_roles[0]) == ""
    assert name_of(snapshot.cluster_roles[0]) == "webhook-admin"
    assert namespace_of(snapshot.cluster_role_bindings[0]) == ""
    assert WEBHOOK_ADMIN["metadata"]["namespace"] == "kube-system"  # the input is not changed
    assert binding["metadata"]["namespace"] == "team"


@pytest.mark.parametrize("via_add", [True, False], ids=["loaded", "built-directly"])
def test_cluster_role_with_a_namespace_is_judged_as_a_cluster_role(via_add: bool) -> None:
    """The issue's case: latent AH-RBAC-024 reported, AH-RBAC-016 on ClusterRole//webhook-admin at medium (not
    Role-like, raised for kube-system). The rules decide by kind even on a snapshot built without add()."""
    role = copy.deepcopy(WEBHOOK_ADMIN)
    snapshot = ClusterSnapshot.from_objects([role]) if via_add else ClusterSnapshot(cluster_roles=[role])
    findings = run_audit(snapshot, AuditContext(), only=["AH-RBAC-016", "AH-RBAC-024"])
    assert sorted((f.rule_id, describe(f)) for f in findings) == [
        ("AH-RBAC-016", "ClusterRole//webhook-admin|-|medium"),
        ("AH-RBAC-024", "ClusterRole//webhook-admin|-|high"),
    ]
    assert all(f.namespace == "" for f in findings)


def test_managed_cluster_role_binding_with_a_namespace_is_found_by_kind() -> None:
    """AH-GOV-001 looks the binding up by kind: a ClusterRoleBinding carrying a namespace is still the
    operator's own (managed) binding, not an undeclared grant."""
    objects = yaml.safe_load_all(
        """
apiVersion: accesshygiene.io/v1alpha1
kind: AccessPolicy
metadata: {name: reader, namespace: team}
spec: {rbac: {rules: [{resources: [pods], verbs: [get]}]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: wide}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader, namespace: team, labels: {app.kubernetes.io/managed-by: access-hygiene}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: wide}
subjects: [{kind: ServiceAccount, name: reader, namespace: team}]
"""
    )
    policy, role, binding = list(objects)
    built = ClusterSnapshot(access_policies=[policy], cluster_roles=[role], cluster_role_bindings=[binding])
    assert run_audit(built, AuditContext(), only=["AH-GOV-001"]) == []
    unmanaged = copy.deepcopy(binding)
    del unmanaged["metadata"]["labels"]
    built = ClusterSnapshot(access_policies=[policy], cluster_roles=[role], cluster_role_bindings=[unmanaged])
    assert [describe(f) for f in run_audit(built, AuditContext(), only=["AH-GOV-001"])] == [
        "ClusterRoleBinding//reader|system:serviceaccount:team:reader|high"
    ]
