"""Prometheus metrics: reconcile instruments plus a collector over the latest scan snapshot.

Scan-derived series come from one immutable snapshot swapped in by `publish_scan`, so a scrape
never sees half of one scan and half of the next, and series of fixed findings vanish at once.

Default series are bounded by constants, never by the number of namespaces or ServiceAccounts:
labels are rule ids, severities, a fixed capability vocabulary, hygiene controls and a namespace
class (cluster, privileged, exempt, other); the two "top" families name at most TOP_NAMESPACES
namespaces and TOP_SERVICEACCOUNTS ServiceAccounts. Per-namespace, per-subject and per-object
series exist only with `detailed=True` (settings `detailed_metrics`, chart `metrics.detailed`).

`publish_scan` only swaps a reference, so it may run after every burst of events. The families of a
published scan are derived once, by a background thread shortly after a burst of publishes (or by a
scrape that comes first), and reused by every scrape of that scan: a scrape never recomputes them, and
a scan replaced within the settle time is never built at all.
"""

import heapq
import logging
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from operator import attrgetter, itemgetter
from types import MappingProxyType
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from access_hygiene import __version__
from access_hygiene.engine.ground.namespace_classes import CLUSTER, EXEMPT, OTHER, PRIVILEGED
from access_hygiene.models.findings import Finding, Severity, SubjectCapability

logger = logging.getLogger(__name__)

PREFIX = "access_hygiene"
# Namespaces are DNS labels, so an underscore can never collide with a real namespace name.
CLUSTER_SCOPE = "_cluster"
RECONCILE_OUTCOMES = frozenset({"success", "error", "refused", "conflict", "invalid"})
OTHER_OUTCOME = "other"
EXEMPTION_STATES = ("active", "expired", "invalid")
POLICY_STATES = ("ready", "not-ready", "refused")
CONTROL_STATES = ("in-place", "missing")
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
# The "top" families: enough for a dashboard's top-10/top-20 panels, bounded whatever the cluster size.
TOP_NAMESPACES = 20
TOP_SERVICEACCOUNTS = 20
# Quiet time after a publish before the families are built in the background (see Metrics).
PREBUILD_AFTER_SECONDS = 1.0

# Key functions run in C over tens of thousands of objects: far cheaper than generator expressions.
_FINDING_KEY = attrgetter("rule_id", "severity", "namespace", "exempted")
_CAPABILITY_KEY = attrgetter("namespace", "service_account", "capability")
ViolationKey = tuple[str, str, str]  # rule_id, severity, namespace class
ExemptedKey = tuple[str, str]  # rule_id, namespace class
FindingKey = tuple[str, Severity, str, bool]  # rule_id, severity, namespace, exempted
CapabilityKey = tuple[str, str, str]  # namespace, ServiceAccount, capability
# One scope's findings and capabilities: the very sequences of the audit's result for the scope.
ScopeSequences = tuple[Sequence[Finding], Sequence[SubjectCapability]]


@dataclass(frozen=True)
class ScanResult:
    """Everything one full audit scan produced, as the metrics need it."""

    findings: Sequence[Finding]
    subject_capabilities: Sequence[SubjectCapability]
    namespace_controls: Mapping[tuple[str, str], bool]  # (namespace, control) -> in place
    exemptions: Mapping[str, int]  # state (active|expired|invalid) -> count
    completed_at: float  # unix time of the scan
    duration_seconds: float
    # namespace -> "privileged" | "exempt" (engine/ground/namespace_classes.py); namespaces not listed are "other".
    namespace_classes: Mapping[str, str] = field(default_factory=dict)
    # The same findings and capabilities by scope (their concatenation is `findings` and `subject_capabilities`),
    # or None. Given, the bounded families are kept up to date from the scopes whose sequences are not the ones
    # counted last (compared by identity: the audit replaces a scope's result, never changes one in place).
    by_scope: Mapping[str, ScopeSequences] | None = None


def scope_label(namespace: str) -> str:
    return namespace or CLUSTER_SCOPE


def _class_lookup(classes: Mapping[str, str]) -> dict[str, str]:
    """namespace -> namespace class label ("" is cluster scope); absent means "other", and so do class
    names outside the vocabulary, so a bad value can never add series."""
    lookup = {namespace: found for namespace, found in classes.items() if found in (PRIVILEGED, EXEMPT)}
    lookup[""] = CLUSTER
    return lookup


def _finding_counts(findings: Iterable[Finding]) -> Counter[tuple[str, Severity, str, bool]]:
    # One C-level pass over the findings; everything else works on the (much smaller) distinct keys.
    return Counter(map(_FINDING_KEY, findings))


def _frozen(counts: Mapping[str, int], defaults: Iterable[str]) -> Mapping[str, int]:
    merged = dict.fromkeys(defaults, 0)
    merged.update({key: int(value) for key, value in counts.items()})
    return MappingProxyType(merged)


def _top(counts: Mapping[Any, int], limit: int) -> list[tuple[Any, int]]:
    """The `limit` largest counts; ties broken by key so the same scan always exports the same series."""
    if len(counts) <= limit:
        return sorted(counts.items(), key=_by_count_then_key)
    # The limit-th largest count, found in C, leaves a few candidates to order (not every ServiceAccount).
    threshold = heapq.nlargest(limit, counts.values())[-1]
    candidates = [item for item in counts.items() if item[1] >= threshold]
    return sorted(candidates, key=_by_count_then_key)[:limit]


def _by_count_then_key(item: tuple[Any, int]) -> tuple[int, Any]:
    return -item[1], item[0]


class _Snapshot:
    """One published scan and the families derived from it, built at most once (under a lock) by whoever
    needs them first, the background prebuild or a scrape, and reused by every later scrape of the scan. A scan
    whose content is the previous one's (the controller's heartbeat republishes an unchanged result every minute)
    shares the previous families: only the scan's time and duration are new."""

    def __init__(
        self,
        scan: ScanResult,
        *,
        detailed: bool,
        previous: "_Snapshot | None" = None,
        scope_counts: "_ScopeCounts | None" = None,
    ) -> None:
        self.scan = scan
        self.detailed = detailed
        self._scope_counts = scope_counts  # the running counts a scan with `by_scope` is built from
        self._content: tuple[tuple[Metric, ...], tuple[Metric, ...]] | None = None
        self._lock = threading.Lock()
        # The snapshot whose content this one shares (the first of a run of unchanged scans), or None.
        self._shared_with: _Snapshot | None = None
        if previous is not None and previous.detailed == detailed and _same_content(previous.scan, scan):
            self._shared_with = previous._shared_with or previous

    @property
    def built(self) -> bool:
        owner = self._shared_with or self
        return owner._content is not None

    def families(self) -> tuple[Metric, ...]:
        aggregated, detailed = (self._shared_with or self)._own_content()
        return (*aggregated, *_timing_families(self.scan), *detailed)

    def _own_content(self) -> tuple[tuple[Metric, ...], tuple[Metric, ...]]:
        with self._lock:
            if self._content is None:
                aggregated = self._aggregated()
                detailed = tuple(_detailed_families(self.scan)) if self.detailed else ()
                self._content = (aggregated, detailed)
            return self._content

    def _aggregated(self) -> tuple[Metric, ...]:
        if self.scan.by_scope is None or self._scope_counts is None:
            return tuple(_aggregated_families(self.scan))
        classes = _class_lookup(self.scan.namespace_classes)
        with self._scope_counts.lock:  # the counts move on with the next scan built: read them now
            counts = self._scope_counts.advance(self.scan.by_scope, classes)
            return tuple(_bounded_families(self.scan, classes, counts))


def _same_content(a: ScanResult, b: ScanResult) -> bool:
    """The same findings and capabilities (the very sequences: the controller republishes its totals as they
    are), controls, exemptions and namespace classes."""
    return (
        a.findings is b.findings
        and a.subject_capabilities is b.subject_capabilities
        and a.namespace_controls == b.namespace_controls
        and a.exemptions == b.exemptions
        and a.namespace_classes == b.namespace_classes
    )


@dataclass(frozen=True)
class _State:
    """What the collector reads. Replaced whole, never mutated."""

    snapshot: _Snapshot | None = None
    managed_objects: Mapping[str, int] | None = None
    policies: Mapping[str, int] | None = None
    # A standby (docs/ha.md) exports only that it does not lead: one replica's series, so sums never double.
    leading: bool = True


class _SnapshotCollector(Collector):
    def __init__(self, metrics: "Metrics") -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect() at registration time.
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._metrics.state  # one read: the whole scrape sees one snapshot
        yield from _build_info()
        yield _leader_family(state.leading)
        if not state.leading:
            return
        if state.snapshot is not None:
            yield from state.snapshot.families()
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


def _leader_family(leading: bool) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        f"{PREFIX}_leader", "1 on the replica that holds the leader Lease (and writes), 0 on a standby."
    )
    family.add_metric([], 1 if leading else 0)
    return family


def _gauge_family(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=[label])
    for key in sorted(counts):
        family.add_metric([key], counts[key])
    return family


def _labelled_family(
    name: str, documentation: str, labels: Sequence[str], values: Iterable[tuple[Sequence[str], float]]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=list(labels))
    for label_values, value in values:
        family.add_metric(list(label_values), value)
    return family


@dataclass(frozen=True)
class _Counts:
    """What the bounded families export about findings and capabilities, before the family objects."""

    active: Mapping[ViolationKey, int]
    exempted: Mapping[ExemptedKey, int]
    per_namespace: Mapping[str, int]  # active findings by namespace
    by_capability: Mapping[tuple[str, str], int]  # (capability, namespace class) -> ServiceAccounts
    per_subject: Mapping[tuple[str, str], int]  # (namespace, ServiceAccount) -> capabilities held


def _counts_from_scratch(scan: ScanResult, classes: Mapping[str, str]) -> _Counts:
    active: Counter[ViolationKey] = Counter()
    exempted: Counter[ExemptedKey] = Counter()
    per_namespace: Counter[str] = Counter()
    for (rule_id, severity, namespace, is_exempted), count in _finding_counts(scan.findings).items():
        namespace_class = classes.get(namespace, OTHER)
        if is_exempted:
            exempted[(rule_id, namespace_class)] += count
        else:
            active[(rule_id, str(severity), namespace_class)] += count
            per_namespace[namespace] += count
    # Distinct (namespace, ServiceAccount, capability) triples, then C-level counts over them.
    held: set[CapabilityKey] = set(map(_CAPABILITY_KEY, scan.subject_capabilities))
    by_capability: Counter[tuple[str, str]] = Counter()
    for (namespace, capability), count in Counter(map(itemgetter(0, 2), held)).items():
        by_capability[(capability, classes.get(namespace, OTHER))] += count
    per_subject: Counter[tuple[str, str]] = Counter(map(itemgetter(0, 1), held))
    return _Counts(active, exempted, per_namespace, by_capability, per_subject)


def _shift(counts: dict[Any, int], key: Any, delta: int) -> None:
    """Add delta to a count, dropping it at zero: a series with no finding left is absent, as from scratch."""
    value = counts.get(key, 0) + delta
    if value:
        counts[key] = value
    else:
        counts.pop(key, None)


def _scope_counts(sequences: ScopeSequences | None) -> tuple[Counter[FindingKey], Counter[CapabilityKey]]:
    if sequences is None:
        return Counter(), Counter()
    return Counter(map(_FINDING_KEY, sequences[0])), Counter(map(_CAPABILITY_KEY, sequences[1]))


class _ScopeCounts:
    """The counts behind the bounded families, kept up to date scope by scope, so that a publish after a
    re-audit costs what changed, not every finding (issue 26). Each scope's findings and capabilities are counted
    when their sequences change; the counts are held by namespace, and summed by namespace class, so a changed
    scope (or a namespace whose class changed) moves only its own namespaces' counts. Equal to
    `_counts_from_scratch` after any sequence of scans (a property test holds it). Not thread-safe: `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._sources: dict[str, ScopeSequences] = {}  # what each scope's counts were taken from
        self._classes: Mapping[str, str] = _class_lookup({})  # the lookup the class sums were made with
        self._namespace_findings: dict[str, dict[tuple[str, Severity, bool], int]] = {}
        self._held: dict[CapabilityKey, int] = {}  # how many scopes report each triple (it is held if any)
        self._namespace_capabilities: dict[str, dict[str, int]] = {}  # namespace -> capability -> ServiceAccounts
        self._per_subject: dict[tuple[str, str], int] = {}
        self._per_namespace: dict[str, int] = {}
        self._active: dict[ViolationKey, int] = {}
        self._exempted: dict[ExemptedKey, int] = {}
        self._by_capability: dict[tuple[str, str], int] = {}

    def advance(self, by_scope: Mapping[str, ScopeSequences], classes: Mapping[str, str]) -> _Counts:
        """Bring the counts to these scopes and namespace classes; returns them (read them under `lock`)."""
        changed = [scope for scope in self._sources if scope not in by_scope]
        for scope, sequences in by_scope.items():
            counted = self._sources.get(scope)
            if counted is None or counted[0] is not sequences[0] or counted[1] is not sequences[1]:
                changed.append(scope)
        touched: set[str] = set()
        if classes != self._classes:
            touched.update(namespace for namespace, _ in self._classes.items() ^ classes.items())
        # A changed scope's old counts are taken again from the sequences they came from (kept anyway): holding
        # every scope's counts as well would cost more memory than the recount of a few scopes costs time.
        moves = [(_scope_counts(self._sources.get(scope)), _scope_counts(by_scope.get(scope))) for scope in changed]
        for old_and_new in moves:
            for findings, held in old_and_new:
                touched.update(key[2] for key in findings)
                touched.update(key[0] for key in held)
        for namespace in touched:
            self._sum_by_class(namespace, -1)
        for (old_findings, old_held), (findings, held) in moves:
            self._count_scope(old_findings, old_held, -1)
            self._count_scope(findings, held, +1)
        for scope in changed:
            if scope in by_scope:
                self._sources[scope] = by_scope[scope]
            else:
                del self._sources[scope]
        self._classes = dict(classes)
        for namespace in touched:
            self._sum_by_class(namespace, +1)
        return _Counts(self._active, self._exempted, self._per_namespace, self._by_capability, self._per_subject)

    def _count_scope(self, findings: Counter[FindingKey], held: Counter[CapabilityKey], sign: int) -> None:
        """Add (sign 1) or withdraw (-1) a scope's counts from the per-namespace counts."""
        for (rule_id, severity, namespace, is_exempted), count in findings.items():
            by_key = self._namespace_findings.setdefault(namespace, {})
            _shift(by_key, (rule_id, severity, is_exempted), sign * count)
            if not by_key:
                del self._namespace_findings[namespace]
        for triple, count in held.items():
            before = self._held.get(triple, 0)
            _shift(self._held, triple, sign * count)
            if bool(before) != (triple in self._held):  # the triple began or ceased to be held
                namespace, sa, capability = triple
                step = 1 if before == 0 else -1
                by_capability = self._namespace_capabilities.setdefault(namespace, {})
                _shift(by_capability, capability, step)
                if not by_capability:
                    del self._namespace_capabilities[namespace]
                _shift(self._per_subject, (namespace, sa), step)

    def _sum_by_class(self, namespace: str, sign: int) -> None:
        """Add (sign 1) or withdraw (-1) a namespace's counts from the sums by namespace class (its current class)."""
        namespace_class = self._classes.get(namespace, OTHER)
        active = 0
        for (rule_id, severity, is_exempted), count in self._namespace_findings.get(namespace, {}).items():
            if is_exempted:
                _shift(self._exempted, (rule_id, namespace_class), sign * count)
            else:
                _shift(self._active, (rule_id, str(severity), namespace_class), sign * count)
                active += count
        for capability, count in self._namespace_capabilities.get(namespace, {}).items():
            _shift(self._by_capability, (capability, namespace_class), sign * count)
        if sign > 0 and active:
            self._per_namespace[namespace] = active
        elif sign < 0:
            self._per_namespace.pop(namespace, None)


def _aggregated_families(scan: ScanResult) -> Iterator[Metric]:
    """The default, bounded families, counted from all of the scan's findings and capabilities."""
    classes = _class_lookup(scan.namespace_classes)
    return _bounded_families(scan, classes, _counts_from_scratch(scan, classes))


def _bounded_families(scan: ScanResult, classes: Mapping[str, str], counts: _Counts) -> Iterator[Metric]:
    """The default, bounded families: nothing here grows with the number of namespaces or subjects."""
    yield _labelled_family(
        "violations",
        "Active (not exempted) findings in the latest scan, by rule, severity and namespace class.",
        ["rule_id", "severity", "namespace_class"],
        sorted(counts.active.items()),
    )
    yield _labelled_family(
        "violations_exempted",
        "Findings suppressed by a valid exemption in the latest scan, by rule and namespace class.",
        ["rule_id", "namespace_class"],
        sorted(counts.exempted.items()),
    )
    yield _labelled_family(
        "top_namespace_violations",
        f"Active findings in the {TOP_NAMESPACES} namespaces with the most (_cluster: cluster-scoped objects).",
        ["namespace", "namespace_class"],
        (
            ((scope_label(namespace), classes.get(namespace, OTHER)), count)
            for namespace, count in _top(counts.per_namespace, TOP_NAMESPACES)
        ),
    )
    yield _labelled_family(
        "serviceaccounts_with_capability",
        "ServiceAccounts that effectively hold a sensitive capability, by capability and namespace class.",
        ["capability", "namespace_class"],
        sorted(counts.by_capability.items()),
    )
    yield _labelled_family(
        "top_serviceaccount_capabilities",
        f"Sensitive capabilities held by the {TOP_SERVICEACCOUNTS} ServiceAccounts that hold the most.",
        ["namespace", "serviceaccount", "namespace_class"],
        (
            ((namespace, sa, classes.get(namespace, OTHER)), count)
            for (namespace, sa), count in _top(counts.per_subject, TOP_SERVICEACCOUNTS)
        ),
    )

    # (control, namespace class, in place) counted in C: one entry per governed namespace and control.
    keys = scan.namespace_controls.keys()
    namespace_classes = map(classes.get, map(itemgetter(0), keys), repeat(OTHER))
    counted = Counter(zip(map(itemgetter(1), keys), namespace_classes, scan.namespace_controls.values(), strict=True))
    controls: Counter[tuple[str, str, str]] = Counter()
    for (control, namespace_class, in_place), count in counted.items():
        for state in CONTROL_STATES:  # both states are exported, 0 included, so ratios never divide by nothing
            controls[(control, namespace_class, state)] += count if (state == "in-place") == in_place else 0
    yield _labelled_family(
        "namespaces_by_control",
        "Governed namespaces where a hygiene control is in place or missing, by namespace class.",
        ["control", "namespace_class", "state"],
        sorted(controls.items()),
    )

    yield _gauge_family(
        "exemptions",
        "Exemptions found in the latest scan, by state.",
        "state",
        _frozen(scan.exemptions, EXEMPTION_STATES),
    )


def _timing_families(scan: ScanResult) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        f"{PREFIX}_last_scan_timestamp_seconds",
        "Unix time the latest full scan completed.",
        value=scan.completed_at,
    )
    yield GaugeMetricFamily(
        f"{PREFIX}_scan_duration_seconds", "Duration of the latest full scan.", value=scan.duration_seconds
    )


def _detailed_families(scan: ScanResult) -> Iterator[Metric]:
    """Opt-in families with one series per namespace, subject or object (high cardinality)."""
    per_namespace: Counter[tuple[str, str, str]] = Counter()
    per_object: Counter[tuple[str, str, str, str, str]] = Counter()
    for f in scan.findings:
        if f.exempted:
            continue
        namespace = scope_label(f.namespace)
        per_namespace[(f.rule_id, str(f.severity), namespace)] += 1
        per_object[(f.rule_id, str(f.severity), namespace, f.object.kind, f.object.name)] += 1
    yield _labelled_family(
        "namespace_violations",
        "Active findings per namespace (opt-in; one series per rule, severity and namespace).",
        ["rule_id", "severity", "namespace"],
        sorted(per_namespace.items()),
    )
    yield _labelled_family(
        "violation_detail",
        "Active findings per object (opt-in; one series per object, high cardinality).",
        ["rule_id", "severity", "namespace", "kind", "name"],
        sorted(per_object.items()),
    )
    yield _labelled_family(
        "subject_capability",
        "1 when a ServiceAccount effectively holds a sensitive capability (opt-in; one series per subject).",
        ["namespace", "serviceaccount", "capability"],
        (
            (labels, 1)
            for labels in sorted({(c.namespace, c.service_account, c.capability) for c in scan.subject_capabilities})
        ),
    )
    yield _labelled_family(
        "namespace_controls",
        "1 when a hygiene control is in place in a namespace, 0 when missing (opt-in; one series per namespace).",
        ["namespace", "control"],
        ((key, 1 if in_place else 0) for key, in_place in sorted(scan.namespace_controls.items())),
    )


class Metrics:
    """The operator's metrics. One instance per process, shared through kopf's memo."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        detailed: bool = False,
        prebuild_after: float | None = PREBUILD_AFTER_SECONDS,
    ) -> None:
        """prebuild_after: once serving, build the latest scan's families this many seconds after a burst of
        publishes, in a background thread, so scrapes only format them; None leaves every build to scrapes."""
        self.detailed = detailed
        self.state = _State()
        self._lock = threading.Lock()  # serialises writers; readers take the reference as is
        self._server: Any = None
        self._prebuild_after = prebuild_after
        self._published = threading.Event()
        self._stopping = threading.Event()
        self._prebuilder: threading.Thread | None = None
        self._scope_counts = _ScopeCounts()
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
        self._admission_floor = Gauge(
            f"{PREFIX}_admission_floor_timestamp_seconds",
            "The floor of admission's 'now' in the rule policies (the latest passed exemption expiry; 0: none).",
            registry=registry,
        )
        self._admission_writes = PromCounter(
            f"{PREFIX}_admission_parameter_writes",
            "Admission objects written because their content changed, by kind (an idle cluster adds none).",
            ["kind"],
            registry=registry,
        )
        self._api_retries = PromCounter(
            f"{PREFIX}_api_retries",
            "API calls retried (by the operator, kopf or the HTTP client), by reason: unreachable, throttled, "
            "conflict, timeout, server-error, terminating, other.",
            ["reason"],
            registry=registry,
        )
        registry.register(_SnapshotCollector(self))

    def count_api_retry(self, reason: str, count: int = 1) -> None:
        """One retried API call (the reason is one of the bounded set k8s/errors.py names)."""
        self._api_retries.labels(reason=reason).inc(count)

    def publish_scan(self, result: ScanResult) -> None:
        """Replace the scan snapshot; series absent from this scan disappear from the next scrape.

        Cheap: the families are derived once, later (see prebuild_after), never per publish. The
        result is kept as is, so the caller must not mutate its sequences or mappings afterwards.
        """
        with self._lock:
            snapshot = _Snapshot(
                result, detailed=self.detailed, previous=self.state.snapshot, scope_counts=self._scope_counts
            )
            self.state = replace(self.state, snapshot=snapshot)
        self._published.set()

    def observe_reconcile(self, handler: str, outcome: str, seconds: float) -> None:
        """Count one handler run (outcome: success|error|refused|conflict|invalid) and time it."""
        bounded = outcome if outcome in RECONCILE_OUTCOMES else OTHER_OUTCOME
        self._reconcile_total.labels(handler=handler, outcome=bounded).inc()
        self._reconcile_seconds.labels(handler=handler).observe(max(seconds, 0.0))

    def observe_admission(self, floor_seconds: float, written: Mapping[str, int]) -> None:
        """The floor the rule policies carry and how many admission objects of each kind were just written."""
        self._admission_floor.set(floor_seconds)
        for kind, count in written.items():
            self._admission_writes.labels(kind=kind).inc(count)

    def set_leading(self, leading: bool) -> None:
        """A standby's scrape holds its leader gauge (0) and process metrics; the leader's holds everything."""
        with self._lock:
            self.state = replace(self.state, leading=leading)

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
        if self._prebuild_after is not None and self._prebuilder is None:
            self._stopping.clear()
            self._prebuilder = threading.Thread(
                target=self._prebuild, args=(self._prebuild_after,), name="access-hygiene-metrics", daemon=True
            )
            self._prebuilder.start()

    def _prebuild(self, settle_seconds: float) -> None:
        """Build the latest scan's families once per burst of publishes, so a scrape finds them ready."""
        while True:
            self._published.wait()
            if self._stopping.wait(settle_seconds):  # publishes within the settle time cost one build
                return
            self._published.clear()
            snapshot = self.state.snapshot
            if snapshot is not None:
                try:
                    snapshot.families()
                except Exception:  # the scrape that reads this scan fails the same way and reports it
                    logger.exception("Metrics of the latest scan could not be built.")

    @property
    def port(self) -> int | None:
        """The port actually bound by serve(), or None before it."""
        return None if self._server is None else int(self._server.server_port)

    def shutdown(self) -> None:
        if self._prebuilder is not None:
            self._stopping.set()
            self._published.set()
            self._prebuilder.join(timeout=10)
            self._prebuilder = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- continuous mode (audit webhook): usage counters and unused grants ---------------------------------------

AUDIT_EVENT_RESULTS = ("recorded", "ignored", "invalid", "dropped", "deferred")  # deferred: a standby found no leader
USAGE_SUBJECT_STATES = ("judged", "observing", "incomplete")


@dataclass(frozen=True)
class UsageSnapshot:
    """One judgement of the usage counters. Replaced whole, never mutated."""

    unused: Mapping[tuple[str, str], int]  # (namespace, serviceaccount) -> unused (verb, resource) pairs
    subjects: Mapping[str, int]  # state -> ServiceAccounts


class UsageMetrics(Collector):
    """Metrics of the audit webhook and the usage judgement. Series are bounded: `unused_grants` names at
    most TOP_SERVICEACCOUNTS ServiceAccounts (those with the most unused permissions) unless `detailed`."""

    def __init__(self, registry: CollectorRegistry, *, detailed: bool = False) -> None:
        self.detailed = detailed
        self.snapshot: UsageSnapshot | None = None
        self._events = PromCounter(
            f"{PREFIX}_audit_events",
            "Audit events the webhook received, by result (recorded, ignored, invalid, dropped by a bound).",
            ["result"],
            registry=registry,
        )
        self._requests = PromCounter(
            f"{PREFIX}_audit_webhook_requests",
            "HTTP requests to the audit webhook, by response code.",
            ["code"],
            registry=registry,
        )
        for result in AUDIT_EVENT_RESULTS:
            self._events.labels(result=result)
        registry.register(self)

    def count_events(self, result: str, count: int = 1) -> None:
        if count:
            self._events.labels(result=result if result in AUDIT_EVENT_RESULTS else OTHER_OUTCOME).inc(count)

    def count_request(self, code: str) -> None:
        """code: the HTTP status, or "tls-failed" / "busy" for connections that got no HTTP answer."""
        self._requests.labels(code=code).inc()

    def publish(self, snapshot: UsageSnapshot | None) -> None:
        """The latest judgement; None (a standby) exports none."""
        self.snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        if snapshot is None:
            return
        unused = snapshot.unused if self.detailed else dict(_top(snapshot.unused, TOP_SERVICEACCOUNTS))
        yield _labelled_family(
            "unused_grants",
            "Granted (verb, resource) pairs a ServiceAccount did not use while observed through the audit webhook "
            f"(judged ServiceAccounts; the top {TOP_SERVICEACCOUNTS} unless detailed metrics are on).",
            ["namespace", "serviceaccount"],
            sorted(unused.items()),
        )
        yield _gauge_family(
            "usage_subjects",
            "ServiceAccounts with observed usage, by state (judged, observing: window too short, incomplete: "
            "a bound dropped some of its requests, never judged).",
            "state",
            _frozen(snapshot.subjects, USAGE_SUBJECT_STATES),
        )


# Just-in-time access (k8s/access_grants.py). Roles are labels: bounded by the eligibilities an administrator
# writes, never by the number of requests.
REVOCATION_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
ACCESS_STATES = ("Pending", "Approved", "Active", "Expired", "Revoked", "Denied")


@dataclass(frozen=True)
class AccessSnapshot:
    """Just-in-time access as of a scrape, read from the operator's cache with the clock's now."""

    active_by_role: Mapping[str, int] = field(default_factory=dict)
    requests_by_state: Mapping[str, int] = field(default_factory=dict)
    overdue: int = 0  # grant RoleBindings still present after their expiry
    oldest_overdue_seconds: float = 0.0


class AccessMetrics(Collector):
    """Grants by role, requests by state, overdue grants (computed at scrape), revocation lag (observed)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._source: Any = None  # Callable[[], AccessSnapshot], set by the access controller once it runs
        self._revocation_lag = Histogram(
            f"{PREFIX}_access_revocation_lag_seconds",
            "Time from a grant's expiry (or revocation decision) to the deletion of its RoleBinding.",
            buckets=REVOCATION_LAG_BUCKETS,
            registry=registry,
        )
        self._transitions = PromCounter(
            f"{PREFIX}_access_transitions_total",
            "AccessRequest state transitions the operator recorded, by new state.",
            ["state"],
            registry=registry,
        )
        registry.register(self)

    def set_source(self, source: Any) -> None:
        self._source = source

    def observe_revocation(self, lag_seconds: float) -> None:
        self._revocation_lag.observe(max(lag_seconds, 0.0))

    def count_transition(self, state: str) -> None:
        self._transitions.labels(state=state if state in ACCESS_STATES else OTHER_OUTCOME).inc()

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot: AccessSnapshot = self._source() if self._source is not None else AccessSnapshot()
        active = GaugeMetricFamily(
            f"{PREFIX}_access_grants_active",
            "Just-in-time grants whose RoleBinding exists now, by role.",
            labels=["role"],
        )
        for role, count in sorted(snapshot.active_by_role.items()):
            active.add_metric([role], count)
        yield active
        yield _gauge_family(
            "access_requests",
            "AccessRequests by state.",
            "state",
            _frozen(snapshot.requests_by_state, ACCESS_STATES),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_access_grants_overdue",
            "Grant RoleBindings still present after their expiry (should be 0 within a second).",
            value=snapshot.overdue,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_access_grants_overdue_max_seconds",
            "How long past its expiry the most overdue grant RoleBinding is (0: none).",
            value=snapshot.oldest_overdue_seconds,
        )
