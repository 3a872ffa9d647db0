"""KeptPermissions: a permission index built from the parts kept across builds equals one built from scratch.

Differential: random sequences of adds, changes and deletes of Roles, ClusterRoles (aggregating ones, ones
aggregated by label, default ones shadowing the shipped data) and bindings (to present, missing and invalid roles,
several subject kinds, default bindings), each followed by a build of the whole set or of a random part of it (as
the incremental audit's scoped snapshots are), compared with PermissionIndex.build of the same snapshot: the same
bindings in the same order, subjects, rules, role rules, stored rules and granted subjects.
"""

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access_hygiene.engine.audit.incremental import CLUSTER, IncrementalAudit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, name_of, namespace_of
from access_hygiene.engine.rbac.permissions import (
    KEPT_PERMISSIONS,
    Generations,
    KeptPermissions,
    PermissionIndex,
    permission_index,
    resolve_cluster_roles,
)
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
RBAC = "rbac.authorization.k8s.io/v1"
NAMESPACES = ("apps", "web")
ROLE_NAMES = ("reader", "writer")
CLUSTER_ROLE_NAMES = ("cr-a", "cr-b", "cr-agg", "cr-agg2", "view", "edit")
BINDING_NAMES = ("b0", "b1", "b2")
RULES = (
    [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["db"]}],
    [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}],
    [],
    [{"apiGroups": ["apps"], "resources": ["deployments", "deployments"], "verbs": ["create"]}] * 2,
)
LABELS = ({}, {"agg": "yes"}, {"agg": "yes", "tier": "2"}, {"rbac.authorization.k8s.io/aggregate-to-view": "true"})
SELECTORS = (
    [{"matchLabels": {"agg": "yes"}}],
    [{"matchLabels": {"agg": "yes", "tier": "2"}}, {"matchLabels": {"agg": "yes"}}],
    [{"matchExpressions": [{"key": "tier", "operator": "Exists"}]}],
    [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}],
    [{}],
)
SUBJECTS = (
    [{"kind": "ServiceAccount", "name": "sa"}],
    [{"kind": "ServiceAccount", "name": "sa", "namespace": "web"}, {"kind": "User", "name": "alice"}],
    [{"kind": "Group", "name": "system:serviceaccounts"}, {"kind": "Group", "name": "devs"}],
    [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "alice"}, {"kind": "Robot", "name": "x"}],
)


def _role(kind: str, namespace: str, name: str, version: int) -> Obj:
    metadata: Obj = {"name": name, "resourceVersion": str(version)}
    if namespace:
        metadata["namespace"] = namespace
    obj: Obj = {"apiVersion": RBAC, "kind": kind, "metadata": metadata, "rules": copy.deepcopy(RULES[version % 5])}
    if kind == "ClusterRole":
        metadata["labels"] = dict(LABELS[version % len(LABELS)])
        if name.startswith("cr-agg") or (name == "view" and version % 2):
            obj["aggregationRule"] = {"clusterRoleSelectors": copy.deepcopy(SELECTORS[version % len(SELECTORS)])}
    if version % 3 == 2:
        metadata["labels"] = {**metadata.get("labels", {}), "kubernetes.io/bootstrapping": "rbac-defaults"}
    return obj


def _binding(kind: str, namespace: str, name: str, version: int) -> Obj:
    ref_kind = ("ClusterRole", "Role", "ClusterRole", "Nothing")[version % 4]
    names = CLUSTER_ROLE_NAMES if ref_kind == "ClusterRole" else ROLE_NAMES
    metadata: Obj = {"name": name, "resourceVersion": str(version)}
    if namespace:
        metadata["namespace"] = namespace
    if version % 5 == 4:
        metadata["labels"] = {"kubernetes.io/bootstrapping": "rbac-defaults"}
    return {
        "apiVersion": RBAC,
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": ref_kind, "name": names[version % len(names)]},
        "subjects": copy.deepcopy(SUBJECTS[version % len(SUBJECTS)]),
    }


def _keys() -> list[tuple[str, str, str]]:
    keys = [("Role", ns, name) for ns in NAMESPACES for name in ROLE_NAMES]
    keys += [("ClusterRole", "", name) for name in CLUSTER_ROLE_NAMES]
    keys += [("RoleBinding", ns, name) for ns in NAMESPACES for name in BINDING_NAMES]
    keys += [("ClusterRoleBinding", "", name) for name in BINDING_NAMES]
    return keys


KEYS = _keys()
VERSIONS = 12
# Every version of every object, made once: a version put again is the same object (as a watch cache keeps it).
POOL = {
    (key, version): (_role if key[0] in ("Role", "ClusterRole") else _binding)(*key, version)
    for key in KEYS
    for version in range(VERSIONS)
}


def _canonical(index: PermissionIndex, snapshot: ClusterSnapshot) -> tuple[Any, ...]:
    bindings = [
        (b.ref, b.role_ref, b.namespace, b.subjects, tuple(b.rules), b.role_found, b.bootstrap) for b in index.bindings
    ]
    role_rules = [(key, tuple(rules)) for key, rules in index.role_rules.items()]
    stored = [index.stored_rules(obj) for obj in (*snapshot.roles, *snapshot.cluster_roles)]
    return bindings, index.by_subject, role_rules, stored, index.granted_keys()


def _shares_role_rule_sets(index: PermissionIndex) -> bool:
    """Bindings of one role hold its RuleSet itself (capabilities are remembered per RuleSet)."""
    return all(
        b.rules is index.role_rules[(b.role_ref.kind, b.role_ref.namespace, b.role_ref.name)]
        for b in index.bindings
        if b.role_found and b.rules
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(KEYS),
            st.one_of(st.none(), st.integers(0, VERSIONS - 1)),  # None: delete
            st.one_of(st.none(), st.lists(st.booleans(), min_size=len(KEYS), max_size=len(KEYS))),  # None: all
        ),
        min_size=1,
        max_size=30,
    ),
    limit=st.integers(1, 8),
)
def test_kept_index_equals_an_index_built_from_scratch(
    steps: list[tuple[tuple[str, str, str], int | None, list[bool] | None]], limit: int
) -> None:
    kept = KeptPermissions(limit=limit)
    present: dict[tuple[str, str, str], Obj] = {}
    for key, version, part in steps:
        if version is None:
            present.pop(key, None)
        else:
            present[key] = POOL[(key, version)]
        chosen = [obj for position, (k, obj) in enumerate(sorted(present.items())) if part is None or part[position]]
        snapshot = ClusterSnapshot.from_objects(chosen)
        fresh = PermissionIndex.build(snapshot)
        from_kept = PermissionIndex.build(snapshot, kept)
        assert _canonical(from_kept, snapshot) == _canonical(fresh, snapshot)
        assert _shares_role_rule_sets(from_kept)


def test_an_unchanged_snapshot_reuses_every_binding_and_a_change_derives_only_what_it_touches() -> None:
    kept = KeptPermissions()
    objects = {key: POOL[(key, 0)] for key in KEYS}
    PermissionIndex.build(ClusterSnapshot.from_objects(objects.values()), kept)
    bindings = sum(1 for kind, _, _ in KEYS if kind.endswith("Binding"))
    assert (kept.derived, kept.reused) == (bindings, 0)

    first = PermissionIndex.build(ClusterSnapshot.from_objects(objects.values()), kept)
    assert (kept.derived, kept.reused) == (bindings, bindings)

    changed = ("ClusterRoleBinding", "", "b1")
    objects[changed] = POOL[(changed, 1)]
    second = PermissionIndex.build(ClusterSnapshot.from_objects(objects.values()), kept)
    assert (kept.derived, kept.reused) == (bindings + 1, 2 * bindings - 1)
    unchanged = [b for b in second.bindings if b.ref.name != "b1" or b.namespace]
    assert all(any(b is old for old in first.bindings) for b in unchanged)


def test_a_changed_role_derives_again_the_bindings_that_use_it_and_no_other() -> None:
    kept = KeptPermissions()
    objects = {key: POOL[(key, 0)] for key in KEYS}  # version 0 of a binding: to ClusterRole cr-a
    for name in BINDING_NAMES:
        objects[("RoleBinding", "web", name)] = POOL[(("RoleBinding", "web", name), 1)]  # to Role writer
    PermissionIndex.build(ClusterSnapshot.from_objects(objects.values()), kept)
    users_of_cr_a = sum(
        1 for (kind, _, _), obj in objects.items() if kind.endswith("Binding") and obj["roleRef"]["name"] == "cr-a"
    )
    assert users_of_cr_a
    derived = kept.derived
    objects[("ClusterRole", "", "cr-a")] = POOL[(("ClusterRole", "", "cr-a"), 1)]  # other rules
    snapshot = ClusterSnapshot.from_objects(objects.values())
    index = PermissionIndex.build(snapshot, kept)
    assert kept.derived - derived == users_of_cr_a
    assert _canonical(index, snapshot) == _canonical(PermissionIndex.build(snapshot), snapshot)


def test_generations_keep_what_was_used_within_the_last_two_and_nothing_older() -> None:
    memo: Generations[str, int] = Generations(limit=2)
    memo.put("a", 1)
    memo.put("b", 2)
    memo.put("c", 3)  # a new generation: a and b are old
    assert memo.get("a") == 1  # used: moves to the new generation
    memo.put("d", 4)  # a new generation again: b (unused for two) goes
    assert memo.get("b") is None
    assert (memo.get("a"), memo.get("c"), memo.get("d")) == (1, 3, 4)
    assert len(memo) <= 2 * memo.limit


def test_the_incremental_audit_keeps_its_parts_for_its_re_audits_only() -> None:
    objects = [POOL[(key, 0)] for key in KEYS]
    snapshot = ClusterSnapshot.from_objects(objects)
    plain = AuditContext(now=PINNED_NOW)
    assert permission_index(snapshot, plain)._kept is None
    audit = IncrementalAudit()
    for obj in objects:
        audit.observe(str(obj["kind"]), None, obj)
    start = AuditContext(now=PINNED_NOW)
    audit.full(_Source(objects), start, snapshot)
    assert KEPT_PERMISSIONS not in start.cache  # a whole cluster's bindings would fill them for nothing
    kept = audit.kept_permissions
    first, second = AuditContext(now=PINNED_NOW), AuditContext(now=PINNED_NOW)
    audit.update(_Source(objects), first, {CLUSTER})
    assert first.cache[KEPT_PERMISSIONS] is kept
    assert kept.derived >= sum(1 for kind, _, _ in KEYS if kind == "ClusterRoleBinding")
    assert not kept.reused
    audit.update(_Source(objects), second, {CLUSTER})
    assert kept.reused == kept.derived == len(second.cache["permissions"].bindings)


def test_resolution_with_a_label_index_equals_testing_every_role() -> None:
    roles = [POOL[(("ClusterRole", "", name), version)] for name in CLUSTER_ROLE_NAMES for version in (0, 1, 3, 4)]
    by_name = {name_of(obj): obj for obj in roles}
    resolved = resolve_cluster_roles(by_name.values())
    assert resolved == _resolve_testing_every_role(list(by_name.values()))


def _resolve_testing_every_role(cluster_roles: list[Obj]) -> dict[str, tuple[Any, ...]]:
    """The resolution as it was before the label index (every aggregator's selectors against every role)."""
    from access_hygiene.engine.ground.selectors import selector_matches
    from access_hygiene.engine.ground.snapshot import labels_of
    from access_hygiene.engine.rbac.permissions import own_rules

    by_name = {name_of(obj): obj for obj in cluster_roles}
    rules = {name: tuple(dict.fromkeys(own_rules(obj))) for name, obj in by_name.items()}
    names = sorted(by_name)
    aggregated: dict[str, list[str]] = {}
    for name, obj in sorted(by_name.items()):
        selectors = (obj.get("aggregationRule") or {}).get("clusterRoleSelectors")
        if not isinstance(selectors, list):
            continue
        sources: list[str] = []
        for selector in selectors:
            for other in names:
                if other != name and other not in sources and selector_matches(selector, labels_of(by_name[other])):
                    sources.append(other)
        aggregated[name] = sources
        rules[name] = ()
    for _ in range(len(aggregated) + 1):
        changed = False
        for name, sources in aggregated.items():
            merged = tuple(dict.fromkeys(rule for source in sources for rule in rules[source]))
            if merged != rules[name]:
                rules[name], changed = merged, True
        if not changed:
            break
    return rules


class _Source:
    def __init__(self, objects: list[Obj]) -> None:
        self._objects = objects

    def objects(self, kind: str) -> list[Obj]:
        return [obj for obj in self._objects if obj["kind"] == kind]

    def in_namespace(self, kind: str, namespace: str) -> list[Obj]:
        return [obj for obj in self.objects(kind) if namespace_of(obj) == namespace]

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return next((o for o in self.in_namespace(kind, namespace) if name_of(o) == name), None)
