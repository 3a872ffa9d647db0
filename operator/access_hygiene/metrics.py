"""Prometheus metrics: reconcile instruments plus a collector over the latest scan snapshot.

Scan-derived series come from one immutable snapshot swapped in by `publish_scan`, so a scrape
never sees half of one scan and half of the next, and series of fixed findings vanish at once.
Labels are bounded: rule ids, severities, namespaces, ServiceAccounts and a fixed capability
vocabulary. Object names appear only in the opt-in detailed series.
"""

import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    start_http_server,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from access_hygiene import __version__
from access_hygiene.models.findings import Finding, SubjectCapability

PREFIX = "access_hygiene"
# Namespaces are DNS labels, so an underscore can never collide with a real namespace name.
CLUSTER_SCOPE = "_cluster"
RECONCILE_OUTCOMES = frozenset({"success", "error", "refused", "conflict", "invalid"})
OTHER_OUTCOME = "other"
EXEMPTION_STATES = ("active", "expired", "invalid")
POLICY_STATES = ("ready", "not-ready", "refused")
# Kinds the operator may own; reported as 0 when absent so "none" differs from "unknown".
MANAGED_KINDS = (
    "ServiceAccount",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "NetworkPolicy",
)
RECONCILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

ViolationKey = tuple[str, str, str]  # rule_id, severity, namespace
ExemptedKey = tuple[str, str]  # rule_id, namespace


@dataclass(frozen=True)
class ScanResult:
    """Everything one full audit scan produced, as the metrics need it."""

    findings: Sequence[Finding]
    subject_capabilities: Sequence[SubjectCapability]
    namespace_controls: Mapping[tuple[str, str], bool]  # (namespace, control) -> in place
    exemptions: Mapping[str, int]  # state (active|expired|invalid) -> count
    completed_at: float  # unix time of the scan
    duration_seconds: float


@dataclass(frozen=True)
class _State:
    """What the collector reads. Replaced whole, never mutated."""

    scan: ScanResult | None = None
    managed_objects: Mapping[str, int] | None = None
    policies: Mapping[str, int] | None = None
    violations: Mapping[ViolationKey, int] = field(default_factory=dict)
    exempted: Mapping[ExemptedKey, int] = field(default_factory=dict)


def scope_label(namespace: str) -> str:
    return namespace or CLUSTER_SCOPE


def count_violations(findings: Iterable[Finding]) -> tuple[Counter[ViolationKey], Counter[ExemptedKey]]:
    """Counts of active findings and, separately, of exempted ones."""
    active: Counter[ViolationKey] = Counter()
    exempted: Counter[ExemptedKey] = Counter()
    for finding in findings:
        namespace = scope_label(finding.namespace)
        if finding.exempted:
            exempted[(finding.rule_id, namespace)] += 1
        else:
            active[(finding.rule_id, finding.severity.value, namespace)] += 1
    return active, exempted


def _frozen(counts: Mapping[str, int], defaults: Iterable[str]) -> Mapping[str, int]:
    merged = dict.fromkeys(defaults, 0)
    merged.update({key: int(value) for key, value in counts.items()})
    return MappingProxyType(merged)


class _SnapshotCollector(Collector):
    def __init__(self, metrics: "Metrics") -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect() at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._metrics.state  # one read: the whole scrape sees one snapshot
        yield from _build_info()
        if state.scan is not None:
            yield from _scan_families(state, detailed=self._metrics.detailed)
        if state.managed_objects is not None:
            yield _gauge_family(
                "managed_objects", "Objects the operator manages, by kind.", "kind", state.managed_objects
            )
        if state.policies is not None:
            yield _gauge_family("policies", "AccessPolicies by readiness state.", "state", state.policies)


def _build_info() -> Iterator[Metric]:
    info = GaugeMetricFamily(f"{PREFIX}_build_info", "Build information; always 1.", labels=["version"])
    info.add_metric([__version__], 1)
    yield info


def _gauge_family(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
    for key in sorted(counts):
        family.add_metric([key], counts[key])
    return family


def _scan_families(state: _State, *, detailed: bool) -> Iterator[Metric]:
    scan = state.scan
    assert scan is not None
    violations = GaugeMetricFamily(
        f"{PREFIX}_violations",
        "Active (not exempted) findings in the latest scan.",
        labels=["rule_id", "severity", "namespace"],
    )
    for (rule_id, severity, namespace), count in sorted(state.violations.items()):
        violations.add_metric([rule_id, severity, namespace], count)
    yield violations

    exempted = GaugeMetricFamily(
        f"{PREFIX}_violations_exempted",
        "Findings suppressed by a valid exemption in the latest scan.",
        labels=["rule_id", "namespace"],
    )
    for (rule_id, namespace), count in sorted(state.exempted.items()):
        exempted.add_metric([rule_id, namespace], count)
    yield exempted

    capabilities = GaugeMetricFamily(
        f"{PREFIX}_subject_capability",
        "1 when a ServiceAccount effectively holds a sensitive capability.",
        labels=["namespace", "serviceaccount", "capability"],
    )
    seen = sorted({(c.namespace, c.service_account, c.capability) for c in scan.subject_capabilities})
    for namespace, service_account, capability in seen:
        capabilities.add_metric([namespace, service_account, capability], 1)
    yield capabilities

    controls = GaugeMetricFamily(
        f"{PREFIX}_namespace_controls",
        "1 when a hygiene control is in place in a namespace, 0 when missing.",
        labels=["namespace", "control"],
    )
    for (namespace, control), in_place in sorted(scan.namespace_controls.items()):
        controls.add_metric([namespace, control], 1 if in_place else 0)
    yield controls

    yield _gauge_family(
        "exemptions",
        "Exemptions found in the latest scan, by state.",
        "state",
        _frozen(scan.exemptions, EXEMPTION_STATES),
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_last_scan_timestamp_seconds",
        "Unix time the latest full scan completed.",
        value=scan.completed_at,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_scan_duration_seconds", "Duration of the latest full scan.", value=scan.duration_seconds
    )
    if detailed:
        yield _detail_family(scan.findings)


def _detail_family(findings: Iterable[Finding]) -> GaugeMetricFamily:
    detail = GaugeMetricFamily(
        f"{PREFIX}_violation_detail",
        "Active findings per object (opt-in; one series per object, high cardinality).",
        labels=["rule_id", "severity", "namespace", "kind", "name"],
    )
    per_object: Counter[tuple[str, str, str, str, str]] = Counter(
        (f.rule_id, f.severity.value, scope_label(f.namespace), f.object.kind, f.object.name)
        for f in findings
        if not f.exempted
    )
    for labels, count in sorted(per_object.items()):
        detail.add_metric(list(labels), count)
    return detail


class Metrics:
    """The operator's metrics. One instance per process, shared through kopf's memo."""

    def __init__(self, registry: CollectorRegistry | None = None, *, detailed: bool = False) -> None:
        self.detailed = detailed
        self.state = _State()
        self._lock = threading.Lock()  # serialises writers; readers take the reference as is
        self._server: Any = None
        if registry is None:
            registry = CollectorRegistry()
            # Our own registry (not the global one) so a second instance never collides; add process basics.
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        self.registry = registry
        self._reconcile_total = PromCounter(
            f"{PREFIX}_reconcile_total",
            "Handler runs by outcome.",
            ["handler", "outcome"],
            registry=registry,
        )
        self._reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Handler run time.",
            ["handler"],
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        registry.register(_SnapshotCollector(self))

    def publish_scan(self, result: ScanResult) -> None:
        """Replace the scan snapshot; series absent from this scan disappear from the next scrape."""
        active, exempted = count_violations(result.findings)
        with self._lock:
            self.state = replace(
                self.state,
                scan=result,
                violations=MappingProxyType(dict(active)),
                exempted=MappingProxyType(dict(exempted)),
            )

    def observe_reconcile(self, handler: str, outcome: str, seconds: float) -> None:
        """Count one handler run (outcome: success|error|refused|conflict|invalid) and time it."""
        bounded = outcome if outcome in RECONCILE_OUTCOMES else OTHER_OUTCOME
        self._reconcile_total.labels(handler=handler, outcome=bounded).inc()
        self._reconcile_seconds.labels(handler=handler).observe(max(seconds, 0.0))

    def set_managed_objects(self, counts: Mapping[str, int]) -> None:
        frozen = _frozen(counts, MANAGED_KINDS)
        with self._lock:
            self.state = replace(self.state, managed_objects=frozen)

    def set_policies(self, counts: Mapping[str, int]) -> None:
        frozen = _frozen(counts, POLICY_STATES)
        with self._lock:
            self.state = replace(self.state, policies=frozen)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Start prometheus_client's HTTP server (daemon thread) on addr:port; port 0 picks a free one."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server

    @property
    def port(self) -> int | None:
        """The port actually bound by serve(), or None before it."""
        return None if self._server is None else int(self._server.server_port)

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
