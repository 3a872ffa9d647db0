"""Metrics exposition: values, label sets, stale series, bounded cardinality, atomic snapshot swaps."""

import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from access_hygiene import __version__
from access_hygiene.metrics import CLUSTER_SCOPE, Metrics, ScanResult
from access_hygiene.models.findings import Finding, ObjectRef, Severity, SubjectCapability

pytestmark = pytest.mark.unit

Samples = dict[str, dict[frozenset[tuple[str, str]], float]]


def scrape_text(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def scrape(metrics: Metrics) -> Samples:
    return scrape_text(generate_latest(metrics.registry).decode())


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """One metric's series keyed by sorted label pairs (stable, readable in assertion diffs)."""
    return {tuple(sorted(labels)): value for labels, value in samples.get(name, {}).items()}


def finding(
    rule_id: str, severity: str, namespace: str, name: str, kind: str = "RoleBinding", exempted: bool = False
) -> Finding:
    return Finding(
        rule_id=rule_id,
        severity=Severity(severity),
        namespace=namespace,
        object=ObjectRef(kind=kind, name=name, namespace=namespace),
        message="test",
        exempted=exempted,
    )


def scan(
    findings: list[Finding] | None = None,
    capabilities: list[SubjectCapability] | None = None,
    controls: dict[tuple[str, str], bool] | None = None,
    exemptions: dict[str, int] | None = None,
    completed_at: float = 1_700_000_000.0,
    duration: float = 1.5,
) -> ScanResult:
    return ScanResult(
        findings=findings or [],
        subject_capabilities=capabilities or [],
        namespace_controls=controls or {},
        exemptions=exemptions or {},
        completed_at=completed_at,
        duration_seconds=duration,
    )


def scan_from_yaml(doc: dict[str, Any]) -> ScanResult:
    return scan(
        findings=[finding(**f) for f in doc.get("findings", [])],
        capabilities=[SubjectCapability(**c) for c in doc.get("capabilities", [])],
        controls={(c["namespace"], c["control"]): c["in_place"] for c in doc.get("controls", [])},
        exemptions=doc.get("exemptions", {}),
    )


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


# Each case: one scan in, the expected series of each scan-derived metric out.
SCAN_CASES = yaml.safe_load(
    f"""
- id: counts-per-rule-severity-namespace
  findings:
    - {{rule_id: AH-RBAC-001, severity: critical, namespace: "", name: crb-a, kind: ClusterRoleBinding}}
    - {{rule_id: AH-RBAC-001, severity: critical, namespace: "", name: crb-b, kind: ClusterRoleBinding}}
    - {{rule_id: AH-SA-001, severity: medium, namespace: shop, name: default, kind: ServiceAccount}}
    - {{rule_id: AH-SA-001, severity: high, namespace: kube-system, name: default, kind: ServiceAccount}}
  violations:
    - [AH-RBAC-001, critical, "{CLUSTER_SCOPE}", 2]
    - [AH-SA-001, medium, shop, 1]
    - [AH-SA-001, high, kube-system, 1]
  exempted: []
- id: exempted-findings-leave-violations
  findings:
    - {{rule_id: AH-NET-001, severity: medium, namespace: shop, name: shop, kind: Namespace}}
    - {{rule_id: AH-NET-001, severity: medium, namespace: legacy, name: legacy, kind: Namespace, exempted: true}}
    - {{rule_id: AH-NET-002, severity: low, namespace: legacy, name: legacy, kind: Namespace, exempted: true}}
  violations:
    - [AH-NET-001, medium, shop, 1]
  exempted:
    - [AH-NET-001, legacy, 1]
    - [AH-NET-002, legacy, 1]
- id: clean-cluster
  findings: []
  violations: []
  exempted: []
"""
)


@pytest.mark.parametrize("case", SCAN_CASES, ids=[c["id"] for c in SCAN_CASES])
def test_violations_are_counted_by_rule_severity_and_namespace(case: dict[str, Any]) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.publish_scan(scan_from_yaml(case))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id=r, severity=s, namespace=n): float(v) for r, s, n, v in case["violations"]
    }
    assert series(samples, "access_hygiene_violations_exempted") == {
        labels(rule_id=r, namespace=n): float(v) for r, n, v in case["exempted"]
    }


def test_capabilities_controls_and_exemptions_are_exposed() -> None:
    metrics = Metrics(CollectorRegistry())
    doc = yaml.safe_load(
        """
        capabilities:
          - {namespace: shop, service_account: api, capability: secrets-read}
          - {namespace: shop, service_account: api, capability: secrets-read}   # duplicate: one series
          - {namespace: ci, service_account: deployer, capability: cluster-admin}
        controls:
          - {namespace: shop, control: default-deny, in_place: true}
          - {namespace: shop, control: automount-off, in_place: false}
        exemptions: {active: 2, expired: 1}
        """
    )
    metrics.publish_scan(scan_from_yaml(doc))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_subject_capability") == {
        labels(namespace="shop", serviceaccount="api", capability="secrets-read"): 1.0,
        labels(namespace="ci", serviceaccount="deployer", capability="cluster-admin"): 1.0,
    }
    assert series(samples, "access_hygiene_namespace_controls") == {
        labels(namespace="shop", control="default-deny"): 1.0,
        labels(namespace="shop", control="automount-off"): 0.0,
    }
    # States missing from the scan are reported as 0, so dashboards and alerts see them.
    assert series(samples, "access_hygiene_exemptions") == {
        labels(state="active"): 2.0,
        labels(state="expired"): 1.0,
        labels(state="invalid"): 0.0,
    }
    assert series(samples, "access_hygiene_last_scan_timestamp_seconds") == {(): 1_700_000_000.0}
    assert series(samples, "access_hygiene_scan_duration_seconds") == {(): 1.5}


def test_stale_series_vanish_after_the_next_scan() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.publish_scan(
        scan(
            findings=[finding("AH-RBAC-002", "critical", "", "anon"), finding("AH-SA-001", "medium", "old", "d")],
            capabilities=[SubjectCapability(namespace="old", service_account="x", capability="exec")],
            controls={("old", "default-deny"): False},
        )
    )
    metrics.publish_scan(
        scan(
            findings=[finding("AH-SA-001", "medium", "new", "d")],
            controls={("new", "default-deny"): True},
            completed_at=1_700_000_060.0,
        )
    )
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id="AH-SA-001", severity="medium", namespace="new"): 1.0
    }
    assert series(samples, "access_hygiene_subject_capability") == {}
    assert series(samples, "access_hygiene_namespace_controls") == {
        labels(namespace="new", control="default-deny"): 1.0
    }
    assert series(samples, "access_hygiene_last_scan_timestamp_seconds") == {(): 1_700_000_060.0}


def test_scan_series_are_absent_before_the_first_scan() -> None:
    # absent(access_hygiene_last_scan_timestamp_seconds) is what the "stalled" alert relies on.
    samples = scrape(Metrics(CollectorRegistry()))
    assert "access_hygiene_last_scan_timestamp_seconds" not in samples
    assert "access_hygiene_violations" not in samples
    assert series(samples, "access_hygiene_build_info") == {labels(version=__version__): 1.0}


@pytest.mark.parametrize(
    ("detailed", "expected_detail_series"),
    [pytest.param(False, 0, id="detailed-off"), pytest.param(True, 500, id="detailed-on")],
)
def test_many_objects_do_not_grow_label_sets_unless_detailed(detailed: bool, expected_detail_series: int) -> None:
    metrics = Metrics(CollectorRegistry(), detailed=detailed)
    metrics.publish_scan(scan(findings=[finding("AH-SA-003", "high", "shop", f"pod-{i}", "Pod") for i in range(500)]))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id="AH-SA-003", severity="high", namespace="shop"): 500.0
    }
    assert len(samples.get("access_hygiene_violation_detail", {})) == expected_detail_series
    object_names = {f"pod-{i}" for i in range(500)}
    for name, by_labels in samples.items():
        if name == "access_hygiene_violation_detail":
            continue
        for label_set in by_labels:
            assert not object_names & {value for _, value in label_set}, f"{name} carries an object name"


def test_detailed_series_name_the_object_and_skip_exempted() -> None:
    metrics = Metrics(CollectorRegistry(), detailed=True)
    metrics.publish_scan(
        scan(
            findings=[
                finding("AH-RBAC-001", "critical", "", "admins", "ClusterRoleBinding"),
                finding("AH-RBAC-009", "high", "shop", "reader", "RoleBinding", exempted=True),
            ]
        )
    )
    assert series(scrape(metrics), "access_hygiene_violation_detail") == {
        labels(
            rule_id="AH-RBAC-001",
            severity="critical",
            namespace=CLUSTER_SCOPE,
            kind="ClusterRoleBinding",
            name="admins",
        ): 1.0
    }


@pytest.mark.parametrize(
    ("outcome", "recorded_as"),
    [
        pytest.param("success", "success", id="success"),
        pytest.param("error", "error", id="error"),
        pytest.param("refused", "refused", id="refused"),
        pytest.param("conflict", "conflict", id="conflict"),
        pytest.param("invalid", "invalid", id="invalid"),
        pytest.param("Some free text from an exception", "other", id="unbounded-text-is-bucketed"),
    ],
)
def test_reconcile_outcomes_are_bounded(outcome: str, recorded_as: str) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_reconcile("policy", outcome, 0.2)
    metrics.observe_reconcile("policy", outcome, 3.0)
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_reconcile_total") == {labels(handler="policy", outcome=recorded_as): 2.0}
    assert series(samples, "access_hygiene_reconcile_duration_seconds_count") == {labels(handler="policy"): 2.0}
    assert series(samples, "access_hygiene_reconcile_duration_seconds_sum") == {labels(handler="policy"): 3.2}
    buckets = series(samples, "access_hygiene_reconcile_duration_seconds_bucket")
    assert buckets[labels(handler="policy", le="0.25")] == 1.0
    assert buckets[labels(handler="policy", le="5.0")] == 2.0


def test_managed_objects_and_policies_report_known_keys_and_replace_old_ones() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.set_managed_objects({"Role": 3, "CustomThing": 1})
    metrics.set_managed_objects({"Role": 2, "NetworkPolicy": 4})
    metrics.set_policies({"ready": 5, "refused": 1})
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_managed_objects") == {
        labels(kind="ServiceAccount"): 0.0,
        labels(kind="Role"): 2.0,
        labels(kind="RoleBinding"): 0.0,
        labels(kind="ClusterRole"): 0.0,
        labels(kind="ClusterRoleBinding"): 0.0,
        labels(kind="NetworkPolicy"): 4.0,
    }
    assert series(samples, "access_hygiene_policies") == {
        labels(state="ready"): 5.0,
        labels(state="not-ready"): 0.0,
        labels(state="refused"): 1.0,
    }
    # A later scan keeps them: publish_scan swaps only scan-derived series.
    metrics.publish_scan(scan())
    assert series(scrape(metrics), "access_hygiene_policies")[labels(state="ready")] == 5.0


def test_a_scrape_never_mixes_two_scans() -> None:
    metrics = Metrics(CollectorRegistry())
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set():
            n = n % 50 + 1
            findings = [finding("AH-SA-001", "medium", f"ns-{i}", "default") for i in range(n)]
            metrics.publish_scan(scan(findings=findings, completed_at=float(n)))

    writer = threading.Thread(target=publish, daemon=True)
    writer.start()
    try:
        for _ in range(200):
            samples = scrape(metrics)
            if "access_hygiene_last_scan_timestamp_seconds" not in samples:
                continue
            total = sum(samples["access_hygiene_violations"].values())
            assert total == samples["access_hygiene_last_scan_timestamp_seconds"][frozenset()]
    finally:
        stop.set()
        writer.join()


@pytest.fixture
def served() -> Iterator[Metrics]:
    metrics = Metrics(detailed=False)
    metrics.serve(0, addr="127.0.0.1")
    yield metrics
    metrics.shutdown()


def test_serve_exposes_the_registry_over_http(served: Metrics) -> None:
    served.publish_scan(scan(findings=[finding("AH-RBAC-002", "critical", "", "anon")]))
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as response:
        samples = scrape_text(response.read().decode())
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id="AH-RBAC-002", severity="critical", namespace=CLUSTER_SCOPE): 1.0
    }
    # The default registry also carries process basics for the operator-health panels.
    assert "process_cpu_seconds_total" in samples
