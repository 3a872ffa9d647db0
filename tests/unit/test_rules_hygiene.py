"""AH-SA/NET/POD/GOV rules: each flags exactly the expected (object, subject, severity) on its bad
fixture and nothing on its good fixture (near misses: exempt namespaces, owners, bootstrap bindings...)."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from access_hygiene.engine.audit.runner import load_rules, run_audit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.models.findings import Finding
from tests.pinned_clock import PINNED_NOW
from tests.unit.rule_fixtures import describe, load

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "hygiene"
NOW = PINNED_NOW  # the instant the fixtures are written for
HYGIENE_RULES = [
    *(f"AH-GOV-{n:03d}" for n in range(1, 5)),
    *(f"AH-NET-{n:03d}" for n in range(1, 6)),
    *(f"AH-POD-{n:03d}" for n in range(1, 4)),
    *(f"AH-SA-{n:03d}" for n in range(1, 12)),
]


def audit(path: Path, rule_id: str, ctx: AuditContext | None = None) -> list[Finding]:
    return run_audit(load(path), ctx or AuditContext(now=NOW), only=[rule_id])


def test_catalogue_is_complete() -> None:
    catalogue = load_rules()
    assert sorted(r for r in catalogue if not r.startswith("AH-RBAC-")) == HYGIENE_RULES
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == HYGIENE_RULES
    for rule_id in HYGIENE_RULES:
        assert catalogue[rule_id].title
        assert len(catalogue[rule_id].description) > 40, rule_id


def test_catalogue_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "rules.md").read_text()
    for rule_id, entry in load_rules().items():
        if rule_id in HYGIENE_RULES:
            assert f"### {rule_id}" in text, rule_id
            assert entry.severity.value in text.split(f"### {rule_id}")[1].split("### ")[0], rule_id


@pytest.mark.parametrize("rule_id", HYGIENE_RULES)
def test_bad_fixture_is_flagged(rule_id: str) -> None:
    expected = yaml.safe_load((FIXTURES / rule_id / "expected.yaml").read_text())
    findings = audit(FIXTURES / rule_id / "bad.yaml", rule_id)
    assert sorted(describe(f) for f in findings) == sorted(expected)
    assert all(f.message and f.rule_id == rule_id and not f.exempted for f in findings)


@pytest.mark.parametrize("rule_id", HYGIENE_RULES)
def test_good_fixture_is_clean(rule_id: str) -> None:
    assert [describe(f) for f in audit(FIXTURES / rule_id / "good.yaml", rule_id)] == []


@pytest.mark.parametrize(
    ("rule_id", "message"),
    [
        ("AH-SA-001", "ServiceAccount default in team has automountServiceAccountToken unset (defaults to true)"),
        ("AH-SA-005", "Secret ci-token holds a non-expiring token for ServiceAccount ci (created 365 days ago, "
         "last used 2030-06-01)"),
        ("AH-SA-004", "ServiceAccount shared is used by 3 apps: StatefulSet/c, billing, shop"),
        ("AH-GOV-001", "RoleBinding extra gives system:serviceaccount:team:reader get core/secrets via "
         "ClusterRole/secret-reader, beyond AccessPolicy reader"),
        ("AH-GOV-004", "AccessPolicy refused is not Ready (GrantCeilingExceeded: secrets-read is not allowed)"),
        ("AH-POD-003", "Deployment root: r (runAsUser 0)"),
        ("AH-NET-005", "NetworkPolicy internet allows egress to any address on 443/TCP"),
    ],
)  # fmt: skip
def test_messages_say_what_and_why(rule_id: str, message: str) -> None:
    messages = [f.message for f in audit(FIXTURES / rule_id / "bad.yaml", rule_id)]
    assert message in messages


def test_config_exemption_silences_hygiene_rules_but_not_credentials() -> None:
    ctx = AuditContext(now=NOW, exempt_namespaces=frozenset({"team"}))
    assert audit(FIXTURES / "AH-SA-003" / "bad.yaml", "AH-SA-003", ctx) == []
    assert [describe(f) for f in audit(FIXTURES / "AH-NET-001" / "bad.yaml", "AH-NET-001", ctx)] == [
        "Namespace//shop|-|medium",
        "Namespace//web|-|medium",
    ]
    # a long-lived credential and an RBAC grant stay reported in exempt namespaces
    assert len(audit(FIXTURES / "AH-SA-005" / "bad.yaml", "AH-SA-005", ctx)) == 3
    assert len(audit(FIXTURES / "AH-SA-006" / "bad.yaml", "AH-SA-006", ctx)) == 2


def test_annotation_exemption_marks_findings_exempted() -> None:
    snapshot = load(FIXTURES / "AH-SA-003" / "bad.yaml")
    snapshot.add(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": "team",
                "annotations": {
                    "accesshygiene.io/exempt": "AH-SA",
                    "accesshygiene.io/exempt-owner": "team",
                    "accesshygiene.io/exempt-reason": "moving to per-app ServiceAccounts",
                    "accesshygiene.io/exempt-until": "2030-07-01",
                },
            },
        }
    )
    findings = run_audit(snapshot, AuditContext(now=NOW), only=["AH-SA-003"])
    assert len(findings) == 3
    assert all(f.exempted and "moving to per-app" in f.exemption_reason for f in findings)


def test_privileged_namespace_raises_severity() -> None:
    ctx = AuditContext(now=NOW, privileged_namespaces=frozenset({"team"}))
    severities = {describe(f) for f in audit(FIXTURES / "AH-GOV-001" / "bad.yaml", "AH-GOV-001", ctx)}
    assert "RoleBinding/team/extra|system:serviceaccount:team:reader|critical" in severities


def test_legacy_token_age_follows_the_clock() -> None:
    ctx = AuditContext(now=datetime(2029, 6, 25, tzinfo=UTC))
    messages = [f.message for f in audit(FIXTURES / "AH-SA-005" / "bad.yaml", "AH-SA-005", ctx)]
    assert any("created 10 days ago" in m for m in messages)


def test_a_token_created_after_now_reads_as_clock_skew_not_a_negative_age() -> None:
    messages = [f.message for f in audit(FIXTURES / "AH-SA-005" / "bad.yaml", "AH-SA-005")]
    assert (
        "Secret skewed-token holds a non-expiring token for ServiceAccount ci (created 2031-01-01T00:00:00+00:00, "
        "a time in the future (clock skew?), no recorded use)" in messages
    )
    early = AuditContext(now=datetime(2020, 1, 1, tzinfo=UTC))
    for message in (f.message for f in audit(FIXTURES / "AH-SA-005" / "bad.yaml", "AH-SA-005", early)):
        assert "days ago" not in message
        assert "in the future (clock skew?)" in message


def test_no_bindings_in_snapshot_gives_a_careful_unused_token_verdict() -> None:
    """Issue 14: an app's manifest set without bindings gets findings that say what the scan cannot see."""
    snapshot = load(FIXTURES / "AH-SA-002" / "bad.yaml")
    snapshot.role_bindings.clear()
    findings = run_audit(snapshot, AuditContext(now=NOW), only=["AH-SA-002", "AH-SA-007"])
    assert findings
    assert all("no binding in the scanned objects" in f.message for f in findings)
