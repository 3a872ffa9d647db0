"""AH-RBAC-001..029: every rule flags exactly the expected (object, subject, severity) on its bad fixture
and nothing on its good fixture (near misses: named grants, bootstrap objects, excluded subjects, ...)."""

from pathlib import Path

import pytest
import yaml

from access_hygiene.reconcile.audit import load_rules, run_audit
from access_hygiene.reconcile.rules import AuditContext
from access_hygiene.reconcile.snapshot import ClusterSnapshot
from tests.pinned_clock import PINNED_NOW
from tests.unit.rule_fixtures import describe, load

pytestmark = pytest.mark.unit


def context() -> AuditContext:
    """A fresh context per audit: its cache holds views of one snapshot."""
    return AuditContext(now=PINNED_NOW)


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
    findings = run_audit(load(FIXTURES / rule_id / "bad.yaml"), context(), only=[rule_id])
    assert sorted(describe(f) for f in findings) == sorted(expected)


@pytest.mark.parametrize("rule_id", RBAC_RULES)
def test_good_fixture_is_clean(rule_id: str) -> None:
    findings = run_audit(load(FIXTURES / rule_id / "good.yaml"), context(), only=[rule_id])
    assert [describe(f) for f in findings] == []


def test_excluded_prefixes_are_overridable() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-001" / "good.yaml")
    ctx = AuditContext(now=PINNED_NOW, excluded_subject_prefixes=())
    findings = run_audit(snapshot, ctx, only=["AH-RBAC-001"])
    assert [describe(f) for f in findings] == [
        "ClusterRoleBinding//scheduler-admin|User:system:kube-scheduler|critical"
    ]


def test_privileged_namespace_raises_severity() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-013" / "bad.yaml")
    ctx = AuditContext(now=PINNED_NOW, privileged_namespaces=frozenset({"team"}))
    severities = {f.object.name: f.severity.value for f in run_audit(snapshot, ctx, only=["AH-RBAC-013"])}
    assert severities == {"alice-execs": "critical", "bob-attaches": "high"}


def test_superuser_binding_is_reported_once() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-001" / "bad.yaml")
    rule_ids = {f.rule_id for f in run_audit(snapshot, context()) if f.object.kind.endswith("Binding")}
    assert rule_ids == {"AH-RBAC-001"}


def test_findings_are_deterministic() -> None:
    objects = [
        doc for rule_id in RBAC_RULES for doc in yaml.safe_load_all((FIXTURES / rule_id / "bad.yaml").read_text())
    ]
    first = run_audit(ClusterSnapshot.from_objects(objects), context())
    second = run_audit(ClusterSnapshot.from_objects(list(reversed(objects))), context())
    assert first == second
    assert [f.severity.rank for f in first] == sorted((f.severity.rank for f in first), reverse=True)


def test_prefix_selection_and_unknown_rule() -> None:
    snapshot = load(FIXTURES / "AH-RBAC-009" / "bad.yaml")
    assert {f.rule_id for f in run_audit(snapshot, context(), only=["ah-rbac-00"])} >= {"AH-RBAC-009"}
    with pytest.raises(ValueError, match="AH-NOPE"):
        run_audit(snapshot, context(), only=["AH-NOPE"])
