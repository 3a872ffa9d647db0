"""Metrics exposition: values, label sets, stale series, bounded cardinality, atomic snapshot swaps."""

import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from access_hygiene import __version__
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.namespace_classes import NAMESPACE_CLASSES, namespace_classes
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.metrics import CLUSTER_SCOPE, TOP_NAMESPACES, TOP_SERVICEACCOUNTS, Metrics, ScanResult
from access_hygiene.models.findings import Finding, ObjectRef, Severity, SubjectCapability
from tests.pinned_clock import PINNED_NOW

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
    classes: dict[str, str] | None = None,
) -> ScanResult:
    return ScanResult(
        findings=findings or [],
        subject_capabilities=capabilities or [],
        namespace_controls=controls or {},
        exemptions=exemptions or {},
        completed_at=completed_at,
        duration_seconds=duration,
        namespace_classes=classes or {},
    )


def scan_from_yaml(doc: dict[str, Any]) -> ScanResult:
    return scan(
        findings=[finding(**f) for f in doc.get("findings", [])],
        capabilities=[SubjectCapability(**c) for c in doc.get("capabilities", [])],
        controls={(c["namespace"], c["control"]): c["in_place"] for c in doc.get("controls", [])},
        exemptions=doc.get("exemptions", {}),
        classes=doc.get("classes", {}),
    )


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


# Each case: one scan in, the expected series of each aggregated violation family out.
SCAN_CASES = yaml.safe_load(
    """
- id: counts-per-rule-severity-and-namespace-class
  classes: {kube-system: privileged, kube-public: exempt}
  findings:
    - {rule_id: AH-RBAC-001, severity: critical, namespace: "", name: crb-a, kind: ClusterRoleBinding}
    - {rule_id: AH-RBAC-001, severity: critical, namespace: "", name: crb-b, kind: ClusterRoleBinding}
    - {rule_id: AH-SA-001, severity: medium, namespace: shop, name: default, kind: ServiceAccount}
    - {rule_id: AH-SA-001, severity: medium, namespace: blog, name: default, kind: ServiceAccount}
    - {rule_id: AH-SA-001, severity: high, namespace: kube-system, name: default, kind: ServiceAccount}
    - {rule_id: AH-RBAC-009, severity: high, namespace: kube-public, name: reader, kind: RoleBinding}
  violations:
    - [AH-RBAC-001, critical, cluster, 2]
    - [AH-SA-001, medium, other, 2]
    - [AH-SA-001, high, privileged, 1]
    - [AH-RBAC-009, high, exempt, 1]
  exempted: []
- id: exempted-findings-leave-violations
  findings:
    - {rule_id: AH-NET-001, severity: medium, namespace: shop, name: shop, kind: Namespace}
    - {rule_id: AH-NET-001, severity: medium, namespace: legacy, name: legacy, kind: Namespace, exempted: true}
    - {rule_id: AH-NET-002, severity: low, namespace: legacy, name: legacy, kind: Namespace, exempted: true}
    - {rule_id: AH-NET-002, severity: low, namespace: old, name: old, kind: Namespace, exempted: true}
  violations:
    - [AH-NET-001, medium, other, 1]
  exempted:
    - [AH-NET-001, other, 1]
    - [AH-NET-002, other, 2]
- id: unknown-class-names-count-as-other
  classes: {shop: "shop-team", blog: privileged}
  findings:
    - {rule_id: AH-SA-001, severity: medium, namespace: shop, name: default, kind: ServiceAccount}
    - {rule_id: AH-SA-001, severity: medium, namespace: blog, name: default, kind: ServiceAccount}
  violations:
    - [AH-SA-001, medium, other, 1]
    - [AH-SA-001, medium, privileged, 1]
  exempted: []
- id: clean-cluster
  findings: []
  violations: []
  exempted: []
"""
)


@pytest.mark.parametrize("case", SCAN_CASES, ids=[c["id"] for c in SCAN_CASES])
def test_violations_are_counted_by_rule_severity_and_namespace_class(case: dict[str, Any]) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.publish_scan(scan_from_yaml(case))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id=r, severity=s, namespace_class=c): float(v) for r, s, c, v in case["violations"]
    }
    assert series(samples, "access_hygiene_violations_exempted") == {
        labels(rule_id=r, namespace_class=c): float(v) for r, c, v in case["exempted"]
    }
    for family in ("access_hygiene_violations", "access_hygiene_violations_exempted"):
        assert {dict(key)["namespace_class"] for key in series(samples, family)} <= set(NAMESPACE_CLASSES)


def test_top_namespaces_are_bounded_ordered_and_stable_on_ties() -> None:
    findings = [finding("AH-RBAC-002", "critical", "", "anon", "ClusterRoleBinding")]
    # ns-000 has 40 findings, ns-001 39, ... ; ns-100..ns-119 tie at one finding each.
    for i in range(40):
        findings += [finding("AH-SA-003", "medium", f"ns-{i:03d}", f"pod-{j}", "Pod") for j in range(40 - i)]
    ties = [finding("AH-SA-001", "medium", f"ns-{i}", "default", "ServiceAccount") for i in range(100, 120)]
    findings += ties
    findings += [finding("AH-NET-001", "medium", "quiet", "quiet", "Namespace", exempted=True) for _ in range(99)]
    metrics = Metrics(CollectorRegistry())
    metrics.publish_scan(scan(findings=findings, classes={"ns-001": "privileged"}))
    top = series(scrape(metrics), "access_hygiene_top_namespace_violations")
    assert len(top) == TOP_NAMESPACES
    expected = {labels(namespace=f"ns-{i:03d}", namespace_class="other"): float(40 - i) for i in range(TOP_NAMESPACES)}
    expected[labels(namespace="ns-001", namespace_class="privileged")] = expected.pop(
        labels(namespace="ns-001", namespace_class="other")
    )
    assert top == expected

    small = Metrics(CollectorRegistry())
    small.publish_scan(scan(findings=findings[:1] + ties))  # the anonymous binding and 1-per-namespace ties
    top = series(scrape(small), "access_hygiene_top_namespace_violations")
    # Ties are broken by namespace name, so the same scan always exports the same series.
    assert set(top) == {labels(namespace=CLUSTER_SCOPE, namespace_class="cluster")} | {
        labels(namespace=f"ns-{i}", namespace_class="other") for i in range(100, 119)
    }


def test_capabilities_are_counted_per_serviceaccount_and_top_holders_named() -> None:
    metrics = Metrics(CollectorRegistry())
    doc = yaml.safe_load(
        """
        classes: {kube-system: privileged}
        capabilities:
          - {namespace: shop, service_account: api, capability: secrets-read}
          - {namespace: shop, service_account: api, capability: secrets-read}   # duplicate: counted once
          - {namespace: shop, service_account: api, capability: exec}
          - {namespace: blog, service_account: api, capability: secrets-read}
          - {namespace: ci, service_account: deployer, capability: cluster-admin}
          - {namespace: ci, service_account: deployer, capability: secrets-read}
          - {namespace: ci, service_account: deployer, capability: exec}
          - {namespace: kube-system, service_account: ctrl, capability: bind}
        """
    )
    metrics.publish_scan(scan_from_yaml(doc))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_serviceaccounts_with_capability") == {
        labels(capability="secrets-read", namespace_class="other"): 3.0,
        labels(capability="exec", namespace_class="other"): 2.0,
        labels(capability="cluster-admin", namespace_class="other"): 1.0,
        labels(capability="bind", namespace_class="privileged"): 1.0,
    }
    assert series(samples, "access_hygiene_top_serviceaccount_capabilities") == {
        labels(namespace="ci", serviceaccount="deployer", namespace_class="other"): 3.0,
        labels(namespace="shop", serviceaccount="api", namespace_class="other"): 2.0,
        labels(namespace="blog", serviceaccount="api", namespace_class="other"): 1.0,
        labels(namespace="kube-system", serviceaccount="ctrl", namespace_class="privileged"): 1.0,
    }
    assert "access_hygiene_subject_capability" not in samples  # per-subject series only when detailed


def test_controls_are_counted_per_state_and_exemptions_exposed() -> None:
    metrics = Metrics(CollectorRegistry())
    doc = yaml.safe_load(
        """
        classes: {ops: privileged}
        controls:
          - {namespace: shop, control: default-deny-ingress, in_place: true}
          - {namespace: blog, control: default-deny-ingress, in_place: false}
          - {namespace: wiki, control: default-deny-ingress, in_place: false}
          - {namespace: shop, control: default-sa-automount-off, in_place: false}
          - {namespace: ops, control: default-deny-ingress, in_place: true}
        exemptions: {active: 2, expired: 1}
        """
    )
    metrics.publish_scan(scan_from_yaml(doc))
    samples = scrape(metrics)
    # Both states are exported for every (control, class) seen, 0 included, so coverage ratios always divide.
    assert series(samples, "access_hygiene_namespaces_by_control") == {
        labels(control="default-deny-ingress", namespace_class="other", state="in-place"): 1.0,
        labels(control="default-deny-ingress", namespace_class="other", state="missing"): 2.0,
        labels(control="default-deny-ingress", namespace_class="privileged", state="in-place"): 1.0,
        labels(control="default-deny-ingress", namespace_class="privileged", state="missing"): 0.0,
        labels(control="default-sa-automount-off", namespace_class="other", state="in-place"): 0.0,
        labels(control="default-sa-automount-off", namespace_class="other", state="missing"): 1.0,
    }
    assert "access_hygiene_namespace_controls" not in samples  # per-namespace series only when detailed
    # States missing from the scan are reported as 0, so dashboards and alerts see them.
    assert series(samples, "access_hygiene_exemptions") == {
        labels(state="active"): 2.0,
        labels(state="expired"): 1.0,
        labels(state="invalid"): 0.0,
    }
    assert series(samples, "access_hygiene_last_scan_timestamp_seconds") == {(): 1_700_000_000.0}
    assert series(samples, "access_hygiene_scan_duration_seconds") == {(): 1.5}


def test_stale_series_vanish_after_the_next_scan() -> None:
    metrics = Metrics(CollectorRegistry(), detailed=True)
    metrics.publish_scan(
        scan(
            findings=[finding("AH-RBAC-002", "critical", "", "anon"), finding("AH-SA-001", "medium", "old", "d")],
            capabilities=[SubjectCapability(namespace="old", service_account="x", capability="exec")],
            controls={("old", "default-deny"): False},
        )
    )
    scrape(metrics)  # the first scan is read once, so its families exist before they are replaced
    metrics.publish_scan(
        scan(
            findings=[finding("AH-SA-001", "medium", "new", "d")],
            controls={("new", "default-deny"): True},
            completed_at=1_700_000_060.0,
        )
    )
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id="AH-SA-001", severity="medium", namespace_class="other"): 1.0
    }
    assert series(samples, "access_hygiene_top_namespace_violations") == {
        labels(namespace="new", namespace_class="other"): 1.0
    }
    assert series(samples, "access_hygiene_serviceaccounts_with_capability") == {}
    assert series(samples, "access_hygiene_top_serviceaccount_capabilities") == {}
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


def synthetic_scan(namespaces: int, per_namespace: int) -> ScanResult:
    """A cluster where every namespace has `per_namespace` ServiceAccounts and RoleBindings, each with findings
    and capabilities: the shape that made default series grow with the cluster."""
    capabilities = ("secrets-read", "exec", "create-pods", "bind", "token-create")
    findings = [finding("AH-RBAC-002", "critical", "", "anon", "ClusterRoleBinding")]
    held, controls = [], {}
    for n in range(namespaces):
        ns = f"team-{n}"
        findings.append(finding("AH-NET-001", "medium", ns, ns, "Namespace", exempted=n % 7 == 0))
        controls[(ns, "default-deny-ingress")] = n % 2 == 0
        controls[(ns, "default-sa-automount-off")] = n % 3 == 0
        for i in range(per_namespace):
            findings.append(finding("AH-RBAC-009", "high", ns, f"rb-{i}", "RoleBinding"))
            findings.append(finding("AH-SA-003", "medium", ns, f"sa-{i}", "ServiceAccount", exempted=i % 5 == 0))
            held += [
                SubjectCapability(namespace=ns, service_account=f"sa-{i}", capability=capabilities[(n + i + k) % 5])
                for k in range(1 + (n + i) % 4)
            ]
    classes = {"team-0": "privileged", "team-1": "exempt"}
    return scan(findings=findings, capabilities=held, controls=controls, classes=classes)


def series_count(samples: Samples) -> int:
    return sum(len(by_labels) for name, by_labels in samples.items() if name.startswith("access_hygiene_"))


def test_default_series_do_not_grow_with_namespaces_and_serviceaccounts() -> None:
    """Regression (issue 15, item 5): 10x the namespaces and ServiceAccounts, the same default series count."""
    counts = {}
    for namespaces in (30, 300):
        metrics = Metrics(CollectorRegistry())
        metrics.publish_scan(synthetic_scan(namespaces, per_namespace=5))
        samples = scrape(metrics)
        counts[namespaces] = series_count(samples)
        subject_names = {f"sa-{i}" for i in range(5)}
        named = {
            name
            for name, by_labels in samples.items()
            for label_set in by_labels
            if subject_names & {value for _, value in label_set}
        }
        assert named <= {"access_hygiene_top_serviceaccount_capabilities"}, "only the bounded top family names SAs"
        assert len(samples["access_hygiene_top_serviceaccount_capabilities"]) == TOP_SERVICEACCOUNTS
        assert len(samples["access_hygiene_top_namespace_violations"]) == TOP_NAMESPACES
    assert counts[300] == counts[30]
    assert counts[300] < 200


def test_detailed_mode_exposes_per_subject_namespace_and_object_series() -> None:
    metrics = Metrics(CollectorRegistry(), detailed=True)
    metrics.publish_scan(synthetic_scan(300, per_namespace=5))
    samples = scrape(metrics)
    held = series(samples, "access_hygiene_subject_capability")
    assert len({(dict(key)["namespace"], dict(key)["serviceaccount"]) for key in held}) == 300 * 5
    assert labels(namespace="team-7", serviceaccount="sa-2", capability="token-create") in held
    per_namespace = series(samples, "access_hygiene_namespace_violations")
    assert per_namespace[labels(rule_id="AH-RBAC-009", severity="high", namespace="team-42")] == 5.0
    assert per_namespace[labels(rule_id="AH-RBAC-002", severity="critical", namespace=CLUSTER_SCOPE)] == 1.0
    assert len(series(samples, "access_hygiene_namespace_controls")) == 300 * 2
    # The default families are there too, unchanged, so dashboards and alerts work in both modes.
    default = Metrics(CollectorRegistry())
    default.publish_scan(synthetic_scan(300, per_namespace=5))
    default_samples = scrape(default)
    for name, by_labels in default_samples.items():
        if name.startswith("access_hygiene_"):
            assert samples[name] == by_labels, name


@pytest.mark.parametrize(
    ("detailed", "expected_detail_series"),
    [pytest.param(False, 0, id="detailed-off"), pytest.param(True, 500, id="detailed-on")],
)
def test_many_objects_do_not_grow_label_sets_unless_detailed(detailed: bool, expected_detail_series: int) -> None:
    metrics = Metrics(CollectorRegistry(), detailed=detailed)
    metrics.publish_scan(scan(findings=[finding("AH-SA-003", "high", "shop", f"pod-{i}", "Pod") for i in range(500)]))
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_violations") == {
        labels(rule_id="AH-SA-003", severity="high", namespace_class="other"): 500.0
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


def test_namespace_classes_follow_the_audit_context() -> None:
    snapshot = ClusterSnapshot(
        namespaces=[
            {"kind": "Namespace", "metadata": {"name": name, "labels": labels_}}
            for name, labels_ in (
                ("kube-system", {}),
                ("kube-public", {}),
                ("sandbox", {"accesshygiene.io/ignore": "true"}),
                ("shop", {"accesshygiene.io/ignore": "false"}),
                ("ops", {}),
            )
        ]
    )
    ctx = AuditContext(
        now=PINNED_NOW,
        privileged_namespaces=frozenset({"kube-system", "ops"}),
        exempt_namespaces=frozenset({"kube-system", "kube-public"}),
        exempt_namespace_selector=(("accesshygiene.io/ignore", "true"),),
    )
    # Privileged wins over exempt; namespaces that are neither are left out ("other").
    assert namespace_classes(snapshot, ctx) == {
        "kube-system": "privileged",
        "ops": "privileged",
        "kube-public": "exempt",
        "sandbox": "exempt",
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


def test_publishing_is_lazy_until_something_reads_the_scan() -> None:
    metrics = Metrics(CollectorRegistry())
    published = []
    for n in range(20):  # a burst of publishes, nobody scraping: nothing is built
        metrics.publish_scan(scan(findings=[finding("AH-SA-001", "medium", f"ns-{n}", "default")]))
        published.append(metrics.state.snapshot)
    assert not any(snapshot is not None and snapshot.built for snapshot in published)
    assert series(scrape(metrics), "access_hygiene_top_namespace_violations") == {
        labels(namespace="ns-19", namespace_class="other"): 1.0
    }
    assert [snapshot is not None and snapshot.built for snapshot in published] == [False] * 19 + [True]


def test_a_served_instance_prebuilds_the_latest_scan_once_per_burst() -> None:
    metrics = Metrics(CollectorRegistry(), prebuild_after=0.2)
    metrics.serve(0, addr="127.0.0.1")
    try:
        scans = [scan(findings=[finding("AH-SA-001", "medium", f"ns-{n}", "default")]) for n in range(50)]
        published = []
        for result in scans:  # a burst: well within the settle time
            metrics.publish_scan(result)
            published.append(metrics.state.snapshot)
        latest = published[-1]
        assert latest is not None
        deadline = time.monotonic() + 30
        while not latest.built and time.monotonic() < deadline:
            time.sleep(0.05)
        assert latest.built, "the latest scan was not built in the background"
        # The burst is coalesced: at most the scan current when the settle time ended, and the latest.
        assert sum(1 for snapshot in published if snapshot is not None and snapshot.built) <= 2
    finally:
        metrics.shutdown()
    assert not any(thread.name == "access-hygiene-metrics" for thread in threading.enumerate())


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
        labels(rule_id="AH-RBAC-002", severity="critical", namespace_class="cluster"): 1.0
    }
    # The default registry also carries process basics for the operator-health panels.
    assert "process_cpu_seconds_total" in samples


def test_admission_floor_and_writes() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.observe_admission(1767268800.0, {"ValidatingAdmissionPolicy": 13})
    metrics.observe_admission(1767268801.0, {})  # nothing changed: no write counted
    samples = scrape(metrics)
    assert series(samples, "access_hygiene_admission_floor_timestamp_seconds") == {(): 1767268801.0}
    writes = series(samples, "access_hygiene_admission_parameter_writes_total")
    assert writes == {labels(kind="ValidatingAdmissionPolicy"): 13.0}


def test_an_unchanged_result_republished_reuses_its_families_and_moves_only_the_scan_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import access_hygiene.metrics as metrics_module

    builds: list[int] = []
    real = metrics_module._aggregated_families

    def counted(scan: ScanResult) -> Iterator[Any]:
        builds.append(len(scan.findings))
        return real(scan)

    monkeypatch.setattr(metrics_module, "_aggregated_families", counted)
    metrics = Metrics(CollectorRegistry(), prebuild_after=None)
    first = synthetic_scan(20, per_namespace=2)
    metrics.publish_scan(first)
    before = generate_latest(metrics.registry).decode()
    for minute in range(1, 4):  # the heartbeat: the same totals, a new time
        metrics.publish_scan(
            ScanResult(
                findings=first.findings,
                subject_capabilities=first.subject_capabilities,
                namespace_controls=dict(first.namespace_controls),
                exemptions=dict(first.exemptions),
                completed_at=first.completed_at + 60 * minute,
                duration_seconds=0.0,
                namespace_classes=dict(first.namespace_classes),
            )
        )
        text = generate_latest(metrics.registry).decode()
    assert builds == [len(first.findings)]  # built once, for the first scan
    scanned_at = next(
        family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name == "access_hygiene_last_scan_timestamp_seconds"
    )
    assert scanned_at == first.completed_at + 180
    strip = lambda t: [line for line in t.splitlines() if "scan_" not in line]  # noqa: E731
    assert strip(text) == strip(before)

    changed = synthetic_scan(21, per_namespace=2)  # new findings: built again, and the new content shows
    metrics.publish_scan(changed)
    text = generate_latest(metrics.registry).decode()
    assert builds == [len(first.findings), len(changed.findings)]
    assert strip(text) != strip(before)


def test_a_standby_exports_its_leader_gauge_and_no_finding_and_the_takeover_exports_the_warm_scan() -> None:
    metrics = Metrics(CollectorRegistry(), prebuild_after=None)
    metrics.publish_scan(scan([finding("AH-RBAC-001", "critical", "", "admin", kind="ClusterRoleBinding")]))
    metrics.set_managed_objects({"Role": 2})
    metrics.set_leading(False)
    standby = scrape(metrics)
    assert series(standby, "access_hygiene_leader") == {(): 0.0}
    assert "access_hygiene_build_info" in standby
    # The admission floor is a plain gauge, 0 until this replica writes admission objects as leader.
    kept = ("access_hygiene_leader", "access_hygiene_build_info", "access_hygiene_admission_floor_timestamp_seconds")
    assert not [name for name in standby if name not in kept]
    metrics.set_leading(True)  # the scan the standby kept is exported at once
    leader = scrape(metrics)
    assert series(leader, "access_hygiene_leader") == {(): 1.0}
    assert sum(series(leader, "access_hygiene_violations").values()) == 1
    assert series(leader, "access_hygiene_managed_objects")[(("kind", "Role"),)] == 2
