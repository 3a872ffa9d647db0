"""Findings -> OpenReports Report/ClusterReport manifests: split, results, cap and summary, determinism."""

import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from access_hygiene.render.reports import (
    OMITTED_ANNOTATION,
    render_report,
    render_reports,
    result_of,
)

pytestmark = pytest.mark.unit
CRDS = Path(__file__).resolve().parents[2] / "crds"


def finding(
    rule: str = "AH-RBAC-009",
    severity: Severity = Severity.HIGH,
    namespace: str = "shop",
    name: str = "reader",
    exempted: bool = False,
    subject: Subject | None = None,
) -> Finding:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    return Finding(
        rule_id=rule,
        severity=severity,
        namespace=namespace,
        object=ObjectRef(kind=kind, name=name, namespace=namespace, api_version="rbac.authorization.k8s.io/v1"),
        message=f"{name} does something risky",
        subject=subject,
        exempted=exempted,
        exemption_reason="ticket OPS-1" if exempted else "",
    )


def crd_schema(file: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_one_report_per_namespace_and_one_cluster_report() -> None:
    reports = render_reports([finding(namespace="b"), finding(namespace=""), finding(namespace="a")])
    assert [(r["kind"], r["metadata"].get("namespace", "")) for r in reports] == [
        ("ClusterReport", ""),
        ("Report", "a"),
        ("Report", "b"),
    ]
    for report in reports:
        assert report["apiVersion"] == "openreports.io/v1alpha1"
        assert report["metadata"]["name"] == "access-hygiene"
        assert report["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "access-hygiene"}
        assert report["source"] == "access-hygiene"


def test_no_findings_no_reports() -> None:
    assert render_reports([]) == []


@pytest.mark.parametrize(
    ("severity", "exempted", "expected"),
    [
        (Severity.CRITICAL, False, "fail"),
        (Severity.HIGH, False, "fail"),
        (Severity.MEDIUM, False, "fail"),
        (Severity.LOW, False, "warn"),
        (Severity.CRITICAL, True, "skip"),
        (Severity.LOW, True, "skip"),
    ],
)
def test_result_of(severity: Severity, exempted: bool, expected: str) -> None:
    assert result_of(finding(severity=severity, exempted=exempted)) == expected


def test_result_carries_rule_severity_message_object_and_subject() -> None:
    subject = Subject(kind="ServiceAccount", name="app", namespace="shop")
    (report,) = render_reports([finding(subject=subject)])
    (result,) = report["results"]
    assert result == {
        "policy": "AH-RBAC-009",
        "rule": "AH-RBAC-009",
        "category": "RBAC",
        "severity": "high",
        "result": "fail",
        "scored": True,
        "message": "reader does something risky",
        "resources": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "name": "reader", "namespace": "shop"}
        ],
        "properties": {"subject": "system:serviceaccount:shop:app"},
    }


def test_exempted_result_is_skip_with_the_reason() -> None:
    (report,) = render_reports([finding(exempted=True)])
    (result,) = report["results"]
    assert result["result"] == "skip"
    assert result["properties"] == {"exemptionReason": "ticket OPS-1"}
    assert report["summary"] == {"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 1}


def test_cap_keeps_the_most_severe_and_counts_everything() -> None:
    findings = [finding(severity=Severity.LOW, name=f"low-{i}") for i in range(5)]
    findings += [finding(severity=Severity.CRITICAL, name="crit"), finding(exempted=True, name="exempt")]
    report = render_report("shop", findings, max_results=3)
    assert [r["resources"][0]["name"] for r in report["results"]] == ["crit", "low-0", "low-1"]
    assert report["summary"] == {"pass": 0, "fail": 1, "warn": 5, "error": 0, "skip": 1}
    assert report["configuration"] == {"limits": {"maxResults": 3}}
    assert report["metadata"]["annotations"] == {OMITTED_ANNOTATION: "4"}


def test_uncapped_report_has_no_omitted_annotation() -> None:
    assert "annotations" not in render_report("shop", [finding()])["metadata"]


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_results"):
        render_report("shop", [finding()], max_results=0)


def test_duplicate_findings_count_once() -> None:
    report = render_report("shop", [finding(), finding()])
    assert len(report["results"]) == 1
    assert report["summary"]["fail"] == 1


def test_deterministic_whatever_the_input_order() -> None:
    findings = [
        finding(rule=f"AH-{family}-00{i}", severity=severity, namespace=ns, name=f"o{i}")
        for i, (family, severity) in enumerate(
            [("RBAC", Severity.HIGH), ("SA", Severity.LOW), ("NET", Severity.MEDIUM), ("POD", Severity.CRITICAL)]
        )
        for ns in ("", "a", "b")
    ]
    expected = render_reports(findings, max_results=2)
    for seed in range(5):
        shuffled = findings[:]
        random.Random(seed).shuffle(shuffled)
        assert render_reports(shuffled, max_results=2) == expected


@pytest.mark.parametrize(("namespace", "crd_file"), [("shop", "openreports.io_reports.yaml"),
                                                     ("", "openreports.io_clusterreports.yaml")])  # fmt: skip
def test_reports_validate_against_the_openreports_crd_schema(namespace: str, crd_file: str) -> None:
    findings = [
        finding(namespace=namespace, subject=Subject(kind="Group", name="devs")),
        finding(namespace=namespace, exempted=True, name="x"),
        finding(namespace=namespace, severity=Severity.LOW, name="y"),
    ]
    (report,) = render_reports(findings, max_results=2)
    schema = crd_schema(crd_file)
    jsonschema.validate(report, schema)
    # Structural schemas prune unknown fields: every key we write must be declared.
    result_properties = set(schema["properties"]["results"]["items"]["properties"])
    for result in report["results"]:
        assert set(result) <= result_properties
    assert set(report) - {"apiVersion", "kind", "metadata"} <= set(schema["properties"])
