"""Incremental audit == full audit, over random event sequences drawn from every rule fixture.

The pool is the union of all good/bad rule fixtures, so every rule has objects that trigger it and
near misses that must not; objects sharing (kind, namespace, name) across fixtures act as versions
of one object, so sequences also modify objects, not only add and delete them.
"""

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from access_hygiene.engine.admission.cel import parameter_floor
from access_hygiene.engine.audit.incremental import (
    ALL,
    CLUSTER,
    DependencyIndex,
    IncrementalAudit,
    SnapshotSource,
    audit_scopes,
    scoped_snapshot,
)
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import KIND_FIELDS, ClusterSnapshot, iter_flattened, name_of, namespace_of
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
NOW = PINNED_NOW  # the instant the fixtures are written for
CTX = AuditContext(now=NOW)
Obj = dict[str, Any]


def _pool() -> list[Obj]:
    objects: list[Obj] = []
    for path in sorted(FIXTURES.rglob("*.yaml")):
        if path.name == "expected.yaml":
            continue
        for obj in iter_flattened(yaml.safe_load_all(path.read_text())):
            if obj.get("kind") in KIND_FIELDS and name_of(obj):
                versioned = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(len(objects) + 1)}}
                objects.append(versioned)
    return objects


POOL = _pool()


class MutableSource(SnapshotSource):
    def __init__(self) -> None:
        super().__init__(ClusterSnapshot())

    def put(self, obj: Obj) -> Obj | None:
        bucket = self._by_kind[str(obj["kind"])][namespace_of(obj)]
        previous = bucket.get(name_of(obj))
        bucket[name_of(obj)] = obj
        return previous

    def drop(self, obj: Obj) -> Obj | None:
        return self._by_kind[str(obj["kind"])][namespace_of(obj)].pop(name_of(obj), None)

    def snapshot(self) -> ClusterSnapshot:
        snapshot = ClusterSnapshot()
        for buckets in self._by_kind.values():
            for bucket in buckets.values():
                for obj in bucket.values():
                    snapshot.add(obj)
        return snapshot


def _canonical(audit: IncrementalAudit) -> tuple[Any, ...]:
    totals = audit.totals()
    return (
        sorted(f.model_dump_json() for f in totals.findings),
        sorted(c.model_dump_json() for c in totals.capabilities),
        totals.controls,
        totals.exemptions,
    )


def _full(source: MutableSource) -> tuple[Any, ...]:
    reference = IncrementalAudit()
    reference.full(source, CTX, source.snapshot())
    return _canonical(reference)


def test_pool_covers_every_kind_and_many_objects() -> None:
    kinds = {obj["kind"] for obj in POOL}
    assert {"RoleBinding", "ClusterRoleBinding", "ClusterRole", "Role", "ServiceAccount", "Namespace"} <= kinds
    assert len(POOL) > 200


def test_full_audit_finds_what_the_fixtures_flag() -> None:
    source = MutableSource()
    for obj in POOL:
        source.put(obj)
    assert len(_full(source)[0]) > 50


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Found by the search once: a policy deleted while a ClusterRoleBinding binds its ServiceAccount (AH-GOV-001).
@example(events=[(True, 0), (True, 2), (True, 4), (False, 0)], batch=1, seed_size=0)
# And: the first binding (ALL: wording changes everywhere) binds a ServiceAccount of a namespace holding nothing.
@example(events=[(True, 160)], batch=1, seed_size=0)
@given(
    events=st.lists(st.tuples(st.booleans(), st.integers(0, len(POOL) - 1)), min_size=1, max_size=40),
    batch=st.integers(1, 6),
    seed_size=st.integers(0, 60),
)
def test_incremental_equals_full_audit(events: list[tuple[bool, int]], batch: int, seed_size: int) -> None:
    source = MutableSource()
    audit = IncrementalAudit()
    for obj in POOL[:: max(1, len(POOL) // max(seed_size, 1))][:seed_size]:
        audit.observe(str(obj["kind"]), source.put(obj), obj)
    audit.full(source, CTX, source.snapshot())
    pending: set[str] = set()
    for step, (add, position) in enumerate(events, start=1):
        obj = POOL[position]
        if add:
            pending |= audit.observe(str(obj["kind"]), source.put(obj), obj)
        else:
            previous = source.drop(obj)
            if previous is not None:
                pending |= audit.observe(str(obj["kind"]), previous, None)
        if step % batch == 0:
            audit.update(source, CTX, pending)
            pending = set()
    audit.update(source, CTX, pending)
    assert _canonical(audit) == _full(source)


def test_binding_to_all_service_accounts_marks_every_scope() -> None:
    index = DependencyIndex()
    binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "everyone"},
        "roleRef": {"kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}],
    }
    assert index.observe("ClusterRoleBinding", None, binding) == {CLUSTER, ALL}


def test_cluster_role_change_reaches_namespaces_that_use_it_and_aggregators() -> None:
    index = DependencyIndex()
    seed = {"kind": "ClusterRoleBinding", "metadata": {"name": "seed"}, "roleRef": {"kind": "ClusterRole", "name": "x"}}
    assert index.observe("ClusterRoleBinding", None, seed) == {CLUSTER, ALL}  # the first binding changes wording
    aggregator = {
        "kind": "ClusterRole",
        "metadata": {"name": "agg"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "true"}}]},
    }
    index.observe("ClusterRole", None, aggregator)
    uses = {
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "shop"},
        "roleRef": {"kind": "ClusterRole", "name": "agg"},
        "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "billing"}],
    }
    assert index.observe("RoleBinding", None, uses) == {"shop", "billing", CLUSTER}  # CLUSTER: "agg" is now bound
    part = {"kind": "ClusterRole", "metadata": {"name": "part", "labels": {"agg": "true"}}}
    assert index.observe("ClusterRole", None, part) == {CLUSTER, "shop", "billing"}  # billing: the subject
    unrelated = {"kind": "ClusterRole", "metadata": {"name": "other"}}
    assert index.observe("ClusterRole", None, unrelated) == {CLUSTER}
    index.observe("RoleBinding", uses, None)
    assert index.observe("ClusterRole", None, part) == {CLUSTER}


def test_scoped_snapshot_brings_foreign_bindings_of_the_scope_service_accounts() -> None:
    foreign = {
        "kind": "RoleBinding",
        "metadata": {"name": "reads", "namespace": "data"},
        "roleRef": {"kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
    }
    role = {"kind": "Role", "metadata": {"name": "reader", "namespace": "data"}, "rules": []}
    unrelated = {**foreign, "metadata": {"name": "other", "namespace": "data"}, "subjects": []}
    snapshot = ClusterSnapshot.from_objects([foreign, role, unrelated])
    index = DependencyIndex()
    scopes: defaultdict[str, int] = defaultdict(int)
    for obj in (foreign, role, unrelated):
        for scope in index.observe(str(obj["kind"]), None, obj):
            scopes[scope] += 1
    sub = scoped_snapshot(SnapshotSource(snapshot), index, {"shop"})
    assert [name_of(b) for b in sub.role_bindings] == ["reads"]
    assert [name_of(r) for r in sub.roles] == ["reader"]
    assert set(audit_scopes(sub, CTX, {"shop"})) == {"shop"}


def _replay(events: list[tuple[bool, Obj]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    source = MutableSource()
    audit = IncrementalAudit()
    audit.full(source, CTX, source.snapshot())
    for add, obj in events:
        previous = source.put(obj) if add else source.drop(obj)
        scopes = audit.observe(str(obj["kind"]), previous, obj if add else None)
        audit.update(source, CTX, scopes)
    return _canonical(audit), _full(source)


def test_foreign_binding_changes_the_bound_service_account_scope() -> None:
    secrets_reader = {
        "kind": "ClusterRole",
        "metadata": {"name": "secrets-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
    }
    namespace = {"kind": "Namespace", "metadata": {"name": "shop"}}
    account = {"kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"}}
    foreign = {
        "kind": "RoleBinding",
        "metadata": {"name": "reads", "namespace": "data"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secrets-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
    }
    incremental, full = _replay([(True, secrets_reader), (True, namespace), (True, account), (True, foreign)])
    assert any('"shop"' in c and "secrets-read" in c for c in full[1])
    assert incremental == full
    incremental, full = _replay(
        [(True, secrets_reader), (True, namespace), (True, account), (True, foreign), (False, foreign)]
    )
    assert incremental == full


def test_namespace_reaudit_still_knows_it_audits_a_live_cluster() -> None:
    """A namespace's sub-snapshot holds only the ClusterRoles it references, plus one built-in role: without it
    a dangling reference to a built-in name would pass for a partial dump (AH-RBAC-022) after any change there."""
    built_in = {
        "kind": "ClusterRole",
        "metadata": {"name": "system:basic-user", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": [],
    }
    unrelated = {"kind": "ClusterRole", "metadata": {"name": "unrelated"}, "rules": []}
    namespace = {"kind": "Namespace", "metadata": {"name": "shop"}}
    dangling = {
        "kind": "RoleBinding",
        "metadata": {"name": "dangling", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:gone"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
    }
    account = {"kind": "ServiceAccount", "metadata": {"name": "app", "namespace": "shop"}}
    events = [(True, built_in), (True, unrelated), (True, namespace), (True, dangling), (True, account)]
    incremental, full = _replay(events)
    assert any("AH-RBAC-022" in f for f in full[0])
    assert incremental == full
    index = DependencyIndex()
    for _, obj in events:
        index.observe(str(obj["kind"]), None, obj)
    sub = scoped_snapshot(SnapshotSource(ClusterSnapshot.from_objects([o for _, o in events])), index, {"shop"})
    assert [name_of(r) for r in sub.cluster_roles] == ["system:basic-user"]  # not "unrelated"


def test_policy_status_changes_stay_in_their_namespace_and_spec_changes_reach_the_cluster_scope() -> None:
    """The operator writes a policy's status after each reconcile: that must not re-audit the cluster scope,
    while a spec change must (AH-GOV-001 judges ClusterRoleBindings against the policies of their subjects)."""
    secrets_reader = {
        "kind": "ClusterRole",
        "metadata": {"name": "secrets-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "extra"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "secrets-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
    }

    def policy(account: str, ready: str) -> Obj:
        return {
            "apiVersion": "accesshygiene.io/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": "app", "namespace": "shop", "uid": "u-1"},
            "spec": {
                "serviceAccount": {"name": account},
                "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]},
            },
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "Reconciled"}]},
        }

    namespace = {"kind": "Namespace", "metadata": {"name": "shop"}}
    base = [(True, secrets_reader), (True, namespace), (True, binding), (True, policy("app", "Unknown"))]
    incremental, full = _replay([*base, (True, policy("app", "True"))])
    assert any("AH-GOV-001" in f for f in full[0])
    assert incremental == full
    incremental, full = _replay([*base, (True, policy("other", "True"))])
    assert not any("AH-GOV-001" in f for f in full[0])  # "app" is no longer the policy's: its finding is gone
    assert incremental == full
    index = DependencyIndex()
    for _, obj in base:
        index.observe(str(obj["kind"]), None, obj)
    assert index.observe("AccessPolicy", policy("app", "Unknown"), policy("app", "True")) == {"shop"}
    assert CLUSTER in index.observe("AccessPolicy", policy("app", "True"), policy("other", "True"))


def test_first_binding_reaches_the_namespace_of_its_service_account_even_when_that_namespace_is_empty() -> None:
    binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ops-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ops", "namespace": "shop"}],
    }
    incremental, full = _replay([(True, binding)])
    assert any('"shop"' in c and "cluster-admin" in c for c in full[1])
    assert incremental == full


def test_passed_expiries_give_the_admission_floor() -> None:
    """Each scope keeps its latest passed exemption expiry (admission's floor) beside its next one."""

    def exempted(kind: str, namespace: str, name: str, until: str) -> Obj:
        annotations = {
            "accesshygiene.io/exempt": "AH-POD-001",
            "accesshygiene.io/exempt-owner": "team",
            "accesshygiene.io/exempt-reason": "legacy",
            "accesshygiene.io/exempt-until": until,
        }
        metadata: Obj = {"name": name, "annotations": annotations, **({"namespace": namespace} if namespace else {})}
        return {"apiVersion": "v1", "kind": kind, "metadata": metadata}

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    snapshot = ClusterSnapshot.from_objects([
        exempted("Namespace", "", "a", "2026-01-01T11:00:00Z"),
        exempted("ServiceAccount", "a", "x", "2026-01-01T11:30:00Z"),
        exempted("ServiceAccount", "b", "y", "2026-01-01T13:00:00Z"),
    ])  # fmt: skip
    audit = IncrementalAudit()
    audit.full(SnapshotSource(snapshot), AuditContext(now=now), snapshot)
    assert sorted(audit.passed_expiries()) == [datetime(2026, 1, 1, 11, 30, tzinfo=UTC)]
    assert audit.next_expiry() == (datetime(2026, 1, 1, 13, tzinfo=UTC), {"b"})
    assert parameter_floor(audit.passed_expiries(), now) == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    later = datetime(2026, 1, 1, 13, tzinfo=UTC)  # b's expiry passes: the floor moves to it
    audit.update(SnapshotSource(snapshot), AuditContext(now=later), {"b"})
    assert parameter_floor(audit.passed_expiries(), later) == later


def test_totals_give_controls_in_namespace_and_control_order() -> None:
    source = MutableSource()
    audit = IncrementalAudit()
    for obj in POOL:
        audit.observe(str(obj["kind"]), source.put(obj), obj)
    audit.full(source, CTX, source.snapshot())
    controls = audit.totals().controls
    assert len({namespace for namespace, _ in controls}) > 3
    assert list(controls) == sorted(controls)
