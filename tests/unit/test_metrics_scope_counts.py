"""Per-scope metric counts (issue 26): a publish recounts only the scopes whose result changed, and exports
exactly what a count from scratch over all findings and capabilities exports."""

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from access_hygiene.metrics import Metrics, ScanResult, ScopeSequences, _top
from access_hygiene.models.findings import Finding, SubjectCapability
from tests.unit.test_metrics import finding, scan, scrape, series

pytestmark = pytest.mark.unit

SCOPES = ("", "alpha", "beta", "gamma", "kube-system")
RULES = ("AH-RBAC-001", "AH-SA-002", "AH-NET-001")
SEVERITIES = ("critical", "high", "low")
ACCOUNTS = ("default", "builder", "deployer")
CAPABILITIES = ("secrets-read", "exec", "cluster-admin")
CLASSES = ("privileged", "exempt", "other", "bogus")

# Findings and capabilities live in their scope's namespace in the audit; other namespaces are drawn too, so the
# counts are shown right for any grouping (a triple reported by two scopes is still one ServiceAccount).
namespaces = st.sampled_from(SCOPES)
findings = st.lists(
    st.builds(
        lambda rule, severity, namespace, name, exempted: finding(rule, severity, namespace, name, exempted=exempted),
        st.sampled_from(RULES),
        st.sampled_from(SEVERITIES),
        namespaces,
        st.sampled_from(("a", "b", "c")),
        st.booleans(),
    ),
    max_size=6,
)
capabilities = st.lists(
    st.builds(
        SubjectCapability,
        namespace=namespaces,
        service_account=st.sampled_from(ACCOUNTS),
        capability=st.sampled_from(CAPABILITIES),
    ),
    max_size=5,
)
# Per scope: keep its sequences, replace them, or drop the scope.
scope_steps = st.dictionaries(
    st.sampled_from(SCOPES),
    st.one_of(st.just("keep"), st.just("drop"), st.tuples(findings, capabilities)),
)
steps = st.lists(
    st.tuples(
        scope_steps,
        st.dictionaries(namespaces, st.sampled_from(CLASSES)),  # namespace classes of this scan
        st.booleans(),  # scraped right after this publish (else it is replaced before it is ever built)
        st.booleans(),  # leading
    ),
    min_size=1,
    max_size=8,
)


def scan_of(by_scope: dict[str, ScopeSequences], classes: dict[str, str], at: float) -> ScanResult:
    ordered = [by_scope[scope] for scope in sorted(by_scope)]
    return replace(
        scan(
            findings=[f for found, _ in ordered for f in found],
            capabilities=[c for _, held in ordered for c in held],
            controls={("alpha", "default-deny-ingress"): True, ("beta", "default-deny-ingress"): False},
            exemptions={"active": 1},
            completed_at=at,
            classes=classes,
        ),
        by_scope=dict(by_scope),
    )


@settings(max_examples=300, deadline=None)
@given(steps)
def test_per_scope_counts_export_what_a_count_from_scratch_exports(
    sequence: list[tuple[dict[str, Any], dict[str, str], bool, bool]],
) -> None:
    incremental = Metrics(CollectorRegistry(), prebuild_after=None)
    current: dict[str, ScopeSequences] = {}
    result = scan_of(current, {}, 0.0)
    for number, (changes, classes, scraped, leading) in enumerate(sequence):
        for scope, change in changes.items():
            if change == "drop":
                current.pop(scope, None)
            elif change != "keep":
                current[scope] = (list(change[0]), list(change[1]))
        result = scan_of(current, classes, 1_700_000_000.0 + number)
        incremental.publish_scan(result)
        incremental.set_leading(leading)
        if scraped:
            assert scrape(incremental) == scrape_from_scratch(result, leading)
    incremental.set_leading(True)
    assert scrape(incremental) == scrape_from_scratch(result, True)


def scrape_from_scratch(result: ScanResult, leading: bool) -> dict[str, Any]:
    reference = Metrics(CollectorRegistry(), prebuild_after=None)
    reference.publish_scan(replace(result, by_scope=None))
    reference.set_leading(leading)
    return scrape(reference)


class CountingList(list[Any]):
    """A list that counts how often it is read through: the scopes a publish recounts."""

    def __init__(self, items: Sequence[Any]) -> None:
        super().__init__(items)
        self.reads = 0

    def __iter__(self) -> Iterator[Any]:
        self.reads += 1
        return super().__iter__()


def test_a_publish_recounts_only_the_scopes_whose_sequences_changed() -> None:
    by_scope: dict[str, tuple[CountingList, CountingList]] = {
        namespace: (
            CountingList([finding("AH-SA-002", "low", namespace, f"sa-{i}", kind="ServiceAccount") for i in range(3)]),
            CountingList([SubjectCapability(namespace=namespace, service_account="builder", capability="exec")]),
        )
        for namespace in ("alpha", "beta", "gamma")
    }
    metrics = Metrics(CollectorRegistry(), prebuild_after=None)

    def publish_and_scrape(classes: dict[str, str], at: float) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
        result = scan_of(dict(by_scope), classes, at)  # (flattening reads every list once: not counted)
        for found, held in by_scope.values():
            found.reads = held.reads = 0
        metrics.publish_scan(result)
        samples = scrape(metrics)
        return samples, {scope: (found.reads, held.reads) for scope, (found, held) in by_scope.items()}

    _, reads = publish_and_scrape({}, 1.0)
    assert reads == {"alpha": (1, 1), "beta": (1, 1), "gamma": (1, 1)}

    beta: list[Finding] = [finding("AH-RBAC-001", "critical", "beta", "admin")]
    by_scope["beta"] = (CountingList(beta), CountingList([]))
    samples, reads = publish_and_scrape({"beta": "privileged"}, 2.0)
    assert reads == {"alpha": (0, 0), "beta": (1, 1), "gamma": (0, 0)}
    assert series(samples, "access_hygiene_violations") == {
        (("namespace_class", "other"), ("rule_id", "AH-SA-002"), ("severity", "low")): 6.0,
        (("namespace_class", "privileged"), ("rule_id", "AH-RBAC-001"), ("severity", "critical")): 1.0,
    }
    assert series(samples, "access_hygiene_serviceaccounts_with_capability") == {
        (("capability", "exec"), ("namespace_class", "other")): 2.0
    }


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text("ab", max_size=3), st.integers(1, 4)), st.integers(1, 5))
def test_the_top_counts_are_the_largest_ties_broken_by_key(counts: dict[str, int], limit: int) -> None:
    expected = heapq.nsmallest(limit, counts.items(), key=lambda item: (-item[1], item[0]))
    assert _top(counts, limit) == expected
