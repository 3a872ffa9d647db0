"""Exemptions: annotation parsing (precise errors, never raises), expiry, scope (object, owners, namespace),
config exemptions, and the AH-GOV-002/003 bookkeeping apply_exemptions adds."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import (
    EXEMPT_ANNOTATION,
    EXEMPT_OWNER_ANNOTATION,
    EXEMPT_REASON_ANNOTATION,
    EXEMPT_UNTIL_ANNOTATION,
    Exemption,
    ExemptionError,
    apply_exemptions,
    exemption_counts,
    exemptions_in,
    namespace_is_exempt,
    parse_exemption,
)
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.models.findings import Finding, ObjectRef, Severity
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "fixtures" / "hygiene" / "exemptions.yaml"
NOW = PINNED_NOW  # the instant the fixtures are written for
CTX = AuditContext(now=NOW)


def annotated(annotations: dict[str, Any], kind: str = "Pod", namespace: str = "team") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "x", "annotations": annotations}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata}


def complete(**overrides: str) -> dict[str, str]:
    base = {
        EXEMPT_ANNOTATION: "AH-NET-001",
        EXEMPT_OWNER_ANNOTATION: "team-a",
        EXEMPT_REASON_ANNOTATION: "migration",
        EXEMPT_UNTIL_ANNOTATION: "2030-07-01",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != "<absent>"}


@pytest.mark.parametrize(
    ("annotations", "rules", "until"),
    [
        (complete(), {"AH-NET-001"}, datetime(2030, 7, 2, tzinfo=UTC)),  # a date is valid through that day
        (complete(**{EXEMPT_ANNOTATION: "*"}), {"*"}, datetime(2030, 7, 2, tzinfo=UTC)),
        (complete(**{EXEMPT_ANNOTATION: " ah-pod , AH-SA-003,"}), {"AH-POD", "AH-SA-003"}, None),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "2030-07-01T10:00:00Z"}), None, datetime(2030, 7, 1, 10, tzinfo=UTC)),
        (
            complete(**{EXEMPT_UNTIL_ANNOTATION: "2030-07-01T12:00:00+02:00"}),
            None,
            datetime(2030, 7, 1, 10, tzinfo=UTC),
        ),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "2030-07-01t10:00:00.123z"}), None, None),
    ],
)
def test_valid_exemptions_parse(annotations: dict[str, str], rules: set[str] | None, until: datetime | None) -> None:
    parsed = parse_exemption(annotated(annotations))
    assert isinstance(parsed, Exemption), parsed
    assert parsed.target == ObjectRef(kind="Pod", name="x", namespace="team", api_version="v1")
    assert (parsed.owner, parsed.reason) == ("team-a", "migration")
    if rules is not None:
        assert parsed.rules == frozenset(rules)
    if until is not None:
        assert parsed.until == until


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (complete(**{EXEMPT_OWNER_ANNOTATION: "<absent>"}), "exempt-owner is missing"),
        (complete(**{EXEMPT_OWNER_ANNOTATION: "  "}), "exempt-owner is missing or empty"),
        (complete(**{EXEMPT_REASON_ANNOTATION: "<absent>"}), "exempt-reason is missing"),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "<absent>"}), "exempt-until is missing (exemptions must expire)"),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "next tuesday"}), "is not an RFC3339 date"),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "2030-02-30"}), "'2030-02-30' is not a valid date"),
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "9999-12-31"}), "is not a valid date"),  # the day after overflows
        (complete(**{EXEMPT_UNTIL_ANNOTATION: "2030-07-01T10:00:00"}), "has no timezone"),
        (complete(**{EXEMPT_ANNOTATION: "AH-NET-001,KUBE-001"}), "unknown rule id(s) 'KUBE-001'"),
        (complete(**{EXEMPT_ANNOTATION: "AH-NET-1"}), "unknown rule id(s) 'AH-NET-1'"),
        (complete(**{EXEMPT_ANNOTATION: " , "}), "accesshygiene.io/exempt is empty"),
        (complete(**{EXEMPT_ANNOTATION: "<absent>"}), "set without accesshygiene.io/exempt"),
    ],
)
def test_malformed_exemptions_say_what_is_wrong(annotations: dict[str, str], message: str) -> None:
    parsed = parse_exemption(annotated(annotations))
    assert isinstance(parsed, ExemptionError), parsed
    assert message in parsed.message


def test_every_problem_is_reported_at_once() -> None:
    parsed = parse_exemption(annotated({EXEMPT_ANNOTATION: "bogus"}))
    assert isinstance(parsed, ExemptionError)
    for fragment in ("unknown rule id", "exempt-owner", "exempt-reason", "exempt-until"):
        assert fragment in parsed.message


def test_no_annotation_is_no_exemption() -> None:
    assert parse_exemption(annotated({"team": "a"})) is None
    assert parse_exemption({"kind": "Pod"}) is None
    assert parse_exemption({"metadata": {"annotations": "not-a-map"}}) is None


@pytest.mark.parametrize(
    ("rules", "rule_id", "covered"),
    [
        ({"*"}, "AH-RBAC-001", True),
        ({"*"}, "*", True),
        ({"AH-NET-001"}, "AH-NET-001", True),
        ({"AH-NET-001"}, "AH-NET-002", False),
        ({"AH-NET-001"}, "*", False),  # a narrow exemption is not a blanket one
        ({"AH-POD"}, "AH-POD-003", True),
        ({"AH-POD"}, "AH-PODX-001", False),
        ({"AH-SA"}, "AH-SAX-001", False),
    ],
)
def test_covers(rules: set[str], rule_id: str, covered: bool) -> None:
    exemption = Exemption(frozenset(rules), "o", "r", NOW, ObjectRef(kind="Pod", name="p"))
    assert exemption.covers(rule_id) is covered


def test_expiry_is_exclusive_and_naive_now_means_utc() -> None:
    exemption = Exemption(frozenset({"*"}), "o", "r", NOW, ObjectRef(kind="Pod", name="p"))
    assert exemption.is_active(datetime(2030, 6, 15, 11, 59, 59, tzinfo=UTC))
    assert not exemption.is_active(NOW)
    assert exemption.is_active(datetime(2030, 6, 15, 11, 59))


def load() -> ClusterSnapshot:
    return ClusterSnapshot.from_objects(yaml.safe_load_all(FIXTURE.read_text()))


def test_exemptions_in_snapshot() -> None:
    found = {(e.target.kind, e.target.name): type(e).__name__ for e in exemptions_in(load())}
    assert found == {
        ("Namespace", "legacy"): "Exemption",
        ("Namespace", "shop"): "Exemption",
        ("Deployment", "legacy-api"): "Exemption",
        ("ServiceAccount", "builder"): "ExemptionError",
        ("ClusterRoleBinding", "ci-admin"): "Exemption",
    }
    assert exemption_counts(load(), CTX) == {"active": 3, "expired": 1, "invalid": 1}
    assert exemption_counts(ClusterSnapshot(), CTX) == {"active": 0, "expired": 0, "invalid": 0}


def finding(rule_id: str, kind: str, name: str, namespace: str) -> Finding:
    return Finding(
        rule_id=rule_id,
        severity=Severity.MEDIUM,
        namespace=namespace,
        object=ObjectRef(kind=kind, name=name, namespace="" if kind == "Namespace" else namespace),
        message="m",
    )


@pytest.mark.parametrize(
    ("case", "exempted_by"),
    [
        (finding("AH-NET-001", "Namespace", "legacy", "legacy"), "Namespace legacy"),
        (finding("AH-RBAC-009", "RoleBinding", "reader", "legacy"), "Namespace legacy"),  # "*" covers all rules
        (finding("AH-NET-001", "Namespace", "shop", "shop"), None),  # expired
        (finding("AH-NET-001", "Namespace", "web", "web"), None),
        (finding("AH-POD-001", "Deployment", "legacy-api", "web"), "Deployment legacy-api"),
        (finding("AH-POD-003", "Pod", "legacy-api-5d8f-abcde", "web"), "Deployment legacy-api"),  # via owners
        (finding("AH-SA-003", "ReplicaSet", "legacy-api-5d8f", "web"), "Deployment legacy-api"),
        (finding("AH-NET-004", "Pod", "legacy-api-5d8f-abcde", "web"), None),  # rule not covered
        (finding("AH-SA-007", "ServiceAccount", "builder", "web"), None),  # malformed never applies
        (finding("AH-RBAC-001", "ClusterRoleBinding", "ci-admin", ""), "ClusterRoleBinding ci-admin"),
        (finding("AH-RBAC-003", "ClusterRoleBinding", "ci-admin", ""), None),
    ],
)
def test_apply_exemptions_scope(case: Finding, exempted_by: str | None) -> None:
    result = apply_exemptions([case], load(), CTX)
    assert result[0].key == case.key
    assert result[0].exempted is (exempted_by is not None)
    if exempted_by:
        assert result[0].exemption_reason.startswith(f"exempted by {exempted_by}: ")
        assert "until" in result[0].exemption_reason


def test_apply_exemptions_reports_expired_and_malformed_once() -> None:
    result = apply_exemptions([], load(), CTX)
    bookkeeping = sorted((f.rule_id, f.object.kind, f.object.name, f.namespace) for f in result)
    assert bookkeeping == [
        ("AH-GOV-002", "Namespace", "shop", "shop"),
        ("AH-GOV-003", "ServiceAccount", "builder", "web"),
    ]
    again = apply_exemptions(result, load(), CTX)  # a runner that already produced them gets no duplicates
    assert sorted(f.key for f in again) == sorted(f.key for f in result)
    assert not any(f.exempted for f in again)  # "*" on legacy does not hide exemption bookkeeping


def test_expired_after_time_passes() -> None:
    later = AuditContext(now=datetime(2031, 1, 2, tzinfo=UTC))
    assert exemption_counts(load(), later) == {"active": 0, "expired": 4, "invalid": 1}
    result = apply_exemptions([finding("AH-NET-001", "Namespace", "legacy", "legacy")], load(), later)
    assert not result[0].exempted


NAMESPACES: dict[str, dict[str, Any]] = {
    "legacy": {"metadata": {"name": "legacy", "annotations": complete(**{EXEMPT_ANNOTATION: "*"})}},
    "partial": {"metadata": {"name": "partial", "annotations": complete()}},
    "plain": {"metadata": {"name": "plain"}},
    "kube-system": {"metadata": {"name": "kube-system"}},
}


@pytest.mark.parametrize(
    ("namespace", "rule_id", "now", "exempt"),
    [
        ("legacy", "*", NOW, True),
        ("legacy", "AH-SA-001", NOW, True),
        ("legacy", "*", datetime(2030, 7, 2, tzinfo=UTC), False),  # expired
        ("partial", "AH-NET-001", NOW, True),
        ("partial", "AH-NET-002", NOW, False),
        ("partial", "*", NOW, False),
        ("plain", "*", NOW, False),
        ("kube-system", "*", NOW, True),  # operator configuration
        ("kube-system", "AH-NET-002", NOW, True),
    ],
)
def test_namespace_is_exempt(namespace: str, rule_id: str, now: datetime, exempt: bool) -> None:
    assert namespace_is_exempt(NAMESPACES[namespace], CTX, now, rule_id) is exempt


def test_config_exemption_list_is_configurable() -> None:
    ctx = AuditContext(now=PINNED_NOW, exempt_namespaces=frozenset({"plain"}))
    assert namespace_is_exempt(NAMESPACES["plain"], ctx, NOW)
    assert not namespace_is_exempt(NAMESPACES["kube-system"], ctx, NOW)


annotation_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["*", "AH-NET-001", "2030-01-01", "2030-01-01T00:00:00Z", "9999-12-31", "0000-01-01", ""]),
)


@settings(suppress_health_check=[HealthCheck.too_slow])  # the machine is shared with a Go build
@given(
    values=st.dictionaries(
        st.sampled_from(
            [EXEMPT_ANNOTATION, EXEMPT_OWNER_ANNOTATION, EXEMPT_REASON_ANNOTATION, EXEMPT_UNTIL_ANNOTATION]
        ),
        annotation_values,
    ),
    kind=st.sampled_from(["Namespace", "Pod", "", None, 3]),
)
def test_parsing_never_raises(values: dict[str, str], kind: Any) -> None:
    parsed = parse_exemption({"kind": kind, "metadata": {"name": "x", "annotations": values}})
    if EXEMPT_ANNOTATION not in values and not values:
        assert parsed is None
    elif isinstance(parsed, ExemptionError):
        assert parsed.message
    else:
        assert isinstance(parsed, Exemption)
        assert parsed.owner
        assert parsed.reason
        assert parsed.until.tzinfo is not None


@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("2030-12-31", "until 2030-12-31 (through that day, UTC)"),
        ("2030-07-01T09:30:00+02:00", "until 2030-07-01T09:30:00+02:00"),
        ("2030-07-01T10:00:00Z", "until 2030-07-01T10:00:00Z"),
    ],
)
def test_exemption_is_shown_as_written(written: str, shown: str) -> None:
    """Issue 25 item 12: "2030-12-31" used to read "until 2031-01-01T00:00:00+00:00"."""
    exemption = parse_exemption(annotated(complete(**{EXEMPT_UNTIL_ANNOTATION: written})))
    assert isinstance(exemption, Exemption)
    assert shown in exemption.describe()
    assert "2031-01-01" not in exemption.describe()
