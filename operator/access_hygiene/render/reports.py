"""Findings as OpenReports objects (openreports.io/v1alpha1): one Report per namespace, one ClusterReport.

Pure and deterministic: the same findings (in any order) give the same manifests, so a writer can
compare them with what it wrote last and skip unchanged reports. No timestamps for that reason.

Mapping (documented in docs/rules.md):
- policy and rule: the rule id; category: the rule family (RBAC, ServiceAccounts, ...).
- result: `skip` for an exempted finding, `warn` for a low-severity one, `fail` otherwise.
- resources: the offending object; properties.subject: the RBAC subject, when there is one.
- Each report holds at most `max_results` results (the most severe first); `summary` always counts
  every finding, `configuration.limits.maxResults` states the cap and an annotation the number left out.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.models.findings import Finding, Severity

REPORTS_API_VERSION = "openreports.io/v1alpha1"
REPORT_KIND = "Report"
CLUSTER_REPORT_KIND = "ClusterReport"
REPORT_NAME = "access-hygiene"
SOURCE = "access-hygiene"
DEFAULT_MAX_RESULTS = 500
OMITTED_ANNOTATION = "accesshygiene.io/omitted-results"
RESULTS = ("pass", "fail", "warn", "error", "skip")
_CATEGORIES = {
    "AH-RBAC": "RBAC",
    "AH-SA": "ServiceAccounts",
    "AH-NET": "Network",
    "AH-POD": "Pods",
    "AH-GOV": "Governance",
}

Manifest = dict[str, Any]


def result_of(finding: Finding) -> str:
    """The OpenReports result of one finding: skip (exempted), warn (low severity) or fail."""
    if finding.exempted:
        return "skip"
    return "warn" if finding.severity is Severity.LOW else "fail"


def category_of(rule_id: str) -> str:
    family = rule_id.rsplit("-", 1)[0]
    return _CATEGORIES.get(family, family)


def _object_reference(finding: Finding) -> dict[str, str]:
    obj = finding.object
    ref = {"apiVersion": obj.api_version} if obj.api_version else {}
    ref |= {"kind": obj.kind, "name": obj.name}
    if obj.namespace:
        ref["namespace"] = obj.namespace
    return ref


def render_result(finding: Finding) -> dict[str, Any]:
    """One OpenReports result for one finding."""
    result: dict[str, Any] = {
        "policy": finding.rule_id,
        "rule": finding.rule_id,
        "category": category_of(finding.rule_id),
        "severity": finding.severity.value,
        "result": result_of(finding),
        "scored": True,
        "message": finding.message,
        "resources": [_object_reference(finding)],
    }
    properties: dict[str, str] = {}
    if finding.subject is not None:
        properties["subject"] = str(finding.subject)
    if finding.exempted:
        properties["exemptionReason"] = finding.exemption_reason or "exempted"
    if properties:
        result["properties"] = properties
    return result


def _order(finding: Finding) -> tuple[Any, ...]:
    # Not exempted before exempted, most severe first, then a stable identity.
    return (finding.exempted, -finding.severity.rank, finding.key)


def render_report(namespace: str, findings: Iterable[Finding], max_results: int = DEFAULT_MAX_RESULTS) -> Manifest:
    """The Report of one namespace ("" gives the ClusterReport for cluster-scoped findings)."""
    if max_results < 1:
        raise ValueError("max_results must be at least 1")
    unique = {f.key: f for f in findings}
    ordered = sorted(unique.values(), key=_order)
    counts = Counter(result_of(f) for f in ordered)
    kept = ordered[:max_results]
    metadata: Manifest = {"name": REPORT_NAME, **({"namespace": namespace} if namespace else {}),
                          "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}}  # fmt: skip
    omitted = len(ordered) - len(kept)
    if omitted:
        metadata["annotations"] = {OMITTED_ANNOTATION: str(omitted)}
    return {
        "apiVersion": REPORTS_API_VERSION,
        "kind": REPORT_KIND if namespace else CLUSTER_REPORT_KIND,
        "metadata": metadata,
        "source": SOURCE,
        "configuration": {"limits": {"maxResults": max_results}},
        "summary": {result: counts.get(result, 0) for result in RESULTS},
        "results": [render_result(f) for f in kept],
    }


def render_reports(findings: Iterable[Finding], max_results: int = DEFAULT_MAX_RESULTS) -> list[Manifest]:
    """One Report per namespace with findings, and a ClusterReport when there are cluster-scoped ones.

    Sorted: the ClusterReport first, then Reports by namespace.
    """
    by_namespace: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_namespace[finding.namespace].append(finding)
    return [render_report(namespace, by_namespace[namespace], max_results) for namespace in sorted(by_namespace)]
