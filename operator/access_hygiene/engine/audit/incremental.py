"""Incremental audit: what one change can affect, and re-auditing only that.

Results are partitioned by scope: a namespace name, or CLUSTER ("") for cluster-scoped findings.
A scope's results (findings, ServiceAccount capabilities, namespace controls, exemption counts)
depend on the scope's own objects plus cluster-scoped objects plus RoleBindings elsewhere that bind
the scope's ServiceAccounts. `DependencyIndex` tracks the cross-scope edges (binding -> subjects'
namespaces, ClusterRole -> namespaces and bindings that use it, aggregation) so that a change marks
exactly the scopes it can affect; `IncrementalAudit.update` re-audits those scopes on a sub-snapshot.
A property test holds incremental == full audit over random event sequences.

Pure: the store is any `ObjectSource` (the operator's watch cache, or a snapshot in tests).
"""

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, Protocol

from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.controls import namespace_controls
from access_hygiene.engine.ground.exemptions import Exemption, exemption_counts, exemptions_in
from access_hygiene.engine.ground.selectors import selector_matches
from access_hygiene.engine.ground.snapshot import KIND_FIELDS, ClusterSnapshot, Obj, labels_of, name_of, namespace_of
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.engine.rbac.capabilities import service_account_capabilities
from access_hygiene.engine.rbac.permissions import KEPT_PERMISSIONS, KeptPermissions, is_bootstrap
from access_hygiene.models.findings import Finding, SubjectCapability

CLUSTER = ""
ALL = "*"  # marker: every scope
CLUSTER_KINDS = frozenset({"ClusterRole", "ClusterRoleBinding", "Namespace"})
NAMESPACED_KINDS = tuple(sorted({kind for kind in KIND_FIELDS if kind not in CLUSTER_KINDS}))
# Groups every ServiceAccount belongs to: a binding to one of them reaches every namespace.
_ALL_SA_GROUPS = frozenset({"system:serviceaccounts", "system:authenticated"})
_SA_GROUP_PREFIX = "system:serviceaccounts:"


class ObjectSource(Protocol):
    """Read access to a set of cluster objects by kind (the watch cache implements it)."""

    def objects(self, kind: str) -> list[Obj]: ...

    def in_namespace(self, kind: str, namespace: str) -> list[Obj]: ...

    def get(self, kind: str, namespace: str, name: str) -> Obj | None: ...


class SnapshotSource:
    """An ObjectSource over a ClusterSnapshot (tests, and the CLI's offline data)."""

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self._by_kind: dict[str, dict[str, dict[str, Obj]]] = defaultdict(lambda: defaultdict(dict))
        for attr in set(KIND_FIELDS.values()):
            for obj in getattr(snapshot, attr):
                self._by_kind[str(obj.get("kind"))][namespace_of(obj)][name_of(obj)] = obj

    def objects(self, kind: str) -> list[Obj]:
        return [o for bucket in self._by_kind.get(kind, {}).values() for o in bucket.values()]

    def in_namespace(self, kind: str, namespace: str) -> list[Obj]:
        return list(self._by_kind.get(kind, {}).get(namespace, {}).values())

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self._by_kind.get(kind, {}).get(namespace, {}).get(name)


def _subject_scopes(binding: Obj) -> set[str]:
    """Namespaces whose ServiceAccounts a binding binds (ALL for groups every SA is in)."""
    scopes: set[str] = set()
    for subject in binding.get("subjects") or []:
        if not isinstance(subject, Mapping):
            continue
        kind, name = subject.get("kind"), str(subject.get("name") or "")
        if kind == "ServiceAccount":
            scopes.add(str(subject.get("namespace") or namespace_of(binding)))
        elif kind == "Group" and name in _ALL_SA_GROUPS:
            scopes.add(ALL)
        elif kind == "Group" and name.startswith(_SA_GROUP_PREFIX):
            scopes.add(name[len(_SA_GROUP_PREFIX) :])
    return scopes


def _role_ref(binding: Obj) -> tuple[str, str]:
    ref = binding.get("roleRef") or {}
    return (str(ref.get("kind") or ""), str(ref.get("name") or "")) if isinstance(ref, Mapping) else ("", "")


@dataclass
class DependencyIndex:
    """Cross-scope edges, kept up to date from every change (pure bookkeeping)."""

    # RoleBindings that bind ServiceAccounts of another namespace: subject namespace -> {(ns, name)}
    foreign_role_bindings: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    # RoleBindings bound to groups every SA is in: they belong in every scope's sub-snapshot
    global_role_bindings: set[tuple[str, str]] = field(default_factory=set)
    # ClusterRole name -> namespaces of RoleBindings that reference it (with counts)
    cluster_role_users: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # ClusterRole name -> the RoleBindings that reference it: whether a role is bound at all is a cluster-scope
    # fact (latent-role findings), so the cluster scope's sub-snapshot carries one of them per role
    cluster_role_bindings: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    # (namespace, Role name) -> subject scopes of the RoleBindings that reference it (with counts)
    role_subjects: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # ClusterRole name -> subject scopes of the ClusterRoleBindings that reference it (with counts)
    cluster_role_subjects: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    # Aggregating ClusterRoles: name -> selectors
    aggregators: dict[str, list[Any]] = field(default_factory=dict)
    # ClusterRoles present: a built-in aggregator (admin, edit, view) absent from the store still aggregates,
    # because the permission engine then uses its shipped definition
    cluster_roles: set[str] = field(default_factory=set)
    # Every RoleBinding: some rules word their findings differently when the objects hold no binding at all
    role_bindings: set[tuple[str, str]] = field(default_factory=set)
    cluster_role_binding_names: set[str] = field(default_factory=set)
    # Subject scope (or ALL) -> ClusterRoleBindings that bind ServiceAccounts there: a namespace's sub-snapshot
    # needs only these (the others' findings are cluster-scoped)
    cluster_role_bindings_by_scope: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def _binding_edges(self, binding: Obj, kind: str, sign: int) -> None:
        ref_kind, ref_name = _role_ref(binding)
        subjects = _subject_scopes(binding)
        if kind == "RoleBinding":
            key = (namespace_of(binding), name_of(binding))
            (self.role_bindings.add if sign > 0 else self.role_bindings.discard)(key)
            for scope in subjects - {namespace_of(binding)}:
                target = self.global_role_bindings if scope == ALL else self.foreign_role_bindings[scope]
                (target.add if sign > 0 else target.discard)(key)
            if ref_kind == "Role":
                role = (namespace_of(binding), ref_name)
                for scope in subjects:
                    self.role_subjects[role][scope] += sign
                self.role_subjects[role] += Counter()
            if ref_kind == "ClusterRole":
                # The binding's namespace and its subjects' namespaces (capabilities live with the subject).
                for scope in {namespace_of(binding), *subjects}:
                    self.cluster_role_users[ref_name][scope] += sign
                self.cluster_role_users[ref_name] += Counter()  # drop zero counts
                users = self.cluster_role_bindings[ref_name]
                (users.add if sign > 0 else users.discard)(key)
                if not users:
                    del self.cluster_role_bindings[ref_name]
        elif kind == "ClusterRoleBinding":
            for scope in subjects:
                bound = self.cluster_role_bindings_by_scope[scope]
                (bound.add if sign > 0 else bound.discard)(name_of(binding))
                if not bound:
                    del self.cluster_role_bindings_by_scope[scope]
            if ref_kind == "ClusterRole":
                for scope in subjects:
                    self.cluster_role_subjects[ref_name][scope] += sign
                self.cluster_role_subjects[ref_name] += Counter()

    def observe(self, kind: str, old: Obj | None, new: Obj | None) -> set[str]:
        """Update the index for one change and return the scopes it affects (may contain ALL)."""
        scopes: set[str] = set()
        for obj in (old, new):
            if obj is not None:
                scopes |= self._scopes_of(kind, obj)
        if kind == "AccessPolicy" and old is not None and new is not None and old.get("spec") == new.get("spec"):
            # Cluster-scoped findings read a policy's spec only (AH-GOV-001); its status (written after every
            # reconcile) and metadata (kopf's finalizer) matter to its own namespace alone.
            scopes.discard(CLUSTER)
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            had_bindings = bool(self.role_bindings or self.cluster_role_binding_names)
            if old is not None:
                self._binding_edges(old, kind, -1)
            if new is not None:
                self._binding_edges(new, kind, +1)
            if kind == "ClusterRoleBinding":
                name = name_of(new if new is not None else old or {})
                (self.cluster_role_binding_names.add if new is not None else self.cluster_role_binding_names.discard)(
                    name
                )
            if had_bindings != bool(self.role_bindings or self.cluster_role_binding_names):
                scopes.add(ALL)  # the first binding appeared or the last went: rules word findings differently
        elif kind == "ClusterRole":
            name = name_of(new if new is not None else old or {})
            rule = (new or {}).get("aggregationRule")
            selectors = rule.get("clusterRoleSelectors") if isinstance(rule, Mapping) else None
            if new is not None and selectors:
                self.aggregators[name] = list(selectors)
            else:
                self.aggregators.pop(name, None)
            (self.cluster_roles.add if new is not None else self.cluster_roles.discard)(name)
        return scopes

    def _scopes_of(self, kind: str, obj: Obj) -> set[str]:
        if kind == "Namespace":
            return {name_of(obj)}
        if kind == "ClusterRoleBinding":
            return {CLUSTER, *_subject_scopes(obj)}
        if kind == "ClusterRole":
            return self._cluster_role_scopes(name_of(obj), labels_of(obj))
        scopes = {namespace_of(obj)}
        if kind == "AccessPolicy" and self.cluster_bound(namespace_of(obj)):
            scopes.add(CLUSTER)  # AH-GOV-001 judges ClusterRoleBindings against the policies of their subjects
        if kind == "Role":
            users = self.role_subjects.get((namespace_of(obj), name_of(obj)), Counter())
            scopes.update(scope for scope, count in users.items() if count > 0)
        if kind == "RoleBinding":
            scopes |= _subject_scopes(obj)
            if _role_ref(obj)[0] == "ClusterRole":
                scopes.add(CLUSTER)  # the ClusterRole is (no longer) bound: its latent finding changes
        return scopes

    def cluster_bound(self, namespace: str) -> bool:
        """Does some ClusterRoleBinding bind ServiceAccounts of this namespace?"""
        return namespace in self.cluster_role_bindings_by_scope or ALL in self.cluster_role_bindings_by_scope

    def _cluster_role_scopes(self, name: str, labels: Mapping[str, str]) -> set[str]:
        """The role itself, every role that aggregates it (to a fixpoint), and everyone who uses any of them."""
        affected = {name}
        frontier = [(name, labels)]
        aggregators = {**_shipped_aggregators(self.cluster_roles), **self.aggregators}
        while frontier:
            _, role_labels = frontier.pop()
            for aggregator, selectors in aggregators.items():
                if aggregator not in affected and any(
                    isinstance(s, Mapping) and selector_matches(s, role_labels) for s in selectors
                ):
                    affected.add(aggregator)
                    frontier.append((aggregator, {}))  # an aggregator's own labels are unknown here: stop
        scopes = {CLUSTER}
        for role in affected:
            scopes.update(ns for ns, count in self.cluster_role_users.get(role, Counter()).items() if count > 0)
            scopes.update(s for s, count in self.cluster_role_subjects.get(role, Counter()).items() if count > 0)
        return scopes


def _shipped_aggregators(present: set[str]) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for role in bootstrap_cluster_roles():
        rule = role.get("aggregationRule")
        if name_of(role) not in present and isinstance(rule, Mapping) and rule.get("clusterRoleSelectors"):
            found[name_of(role)] = list(rule["clusterRoleSelectors"])
    return found


def scoped_snapshot(source: ObjectSource, index: DependencyIndex, scopes: Iterable[str]) -> ClusterSnapshot:
    """The objects the given namespaces' results depend on: theirs, every cluster-scoped object, and
    RoleBindings elsewhere (with their Roles) that bind their ServiceAccounts."""
    scopes = set(scopes)
    wanted = {s for s in scopes if s not in (CLUSTER, ALL)}
    snapshot = ClusterSnapshot()
    if CLUSTER in scopes or ALL in scopes:
        for obj in source.objects("ClusterRoleBinding"):
            snapshot.add(obj)
        # Cluster-scoped findings about ClusterRoleBindings read the policies of the ServiceAccounts they bind.
        for obj in source.objects("AccessPolicy"):
            if namespace_of(obj) not in wanted and index.cluster_bound(namespace_of(obj)):
                snapshot.add(obj)
    else:  # only those binding the scopes' ServiceAccounts: every other one's findings are cluster-scoped
        names = set(index.cluster_role_bindings_by_scope.get(ALL, set()))
        for name in wanted:
            names |= index.cluster_role_bindings_by_scope.get(name, set())
        for name in sorted(names):
            binding = source.get("ClusterRoleBinding", "", name)
            if binding is not None:
                snapshot.add(binding)
    for name in sorted(wanted):
        namespace_object = source.get("Namespace", "", name)
        if namespace_object is not None:
            snapshot.add(namespace_object)
        for kind in NAMESPACED_KINDS:
            for obj in source.in_namespace(kind, name):
                snapshot.add(obj)
    foreign: set[tuple[str, str]] = set(index.global_role_bindings)
    for name in wanted:
        foreign |= index.foreign_role_bindings.get(name, set())
    if CLUSTER in scopes or ALL in scopes:
        foreign |= {min(users) for users in index.cluster_role_bindings.values() if users}
    if (
        not snapshot.cluster_role_bindings
        and not foreign
        and not any(source.in_namespace("RoleBinding", name) for name in wanted)
    ):  # "no binding at all" is a cluster-wide fact: carry one binding from elsewhere, if there is any
        if index.role_bindings:
            foreign.add(next(iter(index.role_bindings)))
        elif index.cluster_role_binding_names:
            any_binding = source.get("ClusterRoleBinding", "", next(iter(index.cluster_role_binding_names)))
            if any_binding is not None:
                snapshot.add(any_binding)
    for namespace, name in sorted(foreign):
        if namespace in wanted:
            continue
        binding = source.get("RoleBinding", namespace, name)
        if binding is None:
            continue
        snapshot.add(binding)
        ref_kind, ref_name = _role_ref(binding)
        role = source.get("Role", namespace, ref_name) if ref_kind == "Role" else None
        if role is not None:
            snapshot.add(role)
    everything = CLUSTER in scopes or ALL in scopes
    for obj in source.objects("ClusterRole") if everything else _cluster_roles_for(source, snapshot):
        snapshot.add(obj)
    return snapshot


def _cluster_roles_for(source: ObjectSource, snapshot: ClusterSnapshot) -> list[Obj]:
    """The ClusterRoles namespaced results can depend on: those the snapshot's bindings reference, the sources
    of aggregating ones (to a fixpoint), and one built-in role (its presence tells a live cluster from a partial
    dump). Every other ClusterRole only has cluster-scoped findings, and parsing all of them per namespace
    re-audit was most of its cost."""
    live = {name_of(obj): obj for obj in source.objects("ClusterRole")}
    shipped = {name_of(obj): obj for obj in bootstrap_cluster_roles()}
    pending = [
        ref_name
        for binding in (*snapshot.role_bindings, *snapshot.cluster_role_bindings)
        for ref_kind, ref_name in [_role_ref(binding)]
        if ref_kind == "ClusterRole"
    ]
    needed: set[str] = set()
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed.add(name)
        role = live.get(name) or shipped.get(name) or {}
        rule = role.get("aggregationRule")
        selectors = rule.get("clusterRoleSelectors") if isinstance(rule, Mapping) else None
        for selector in selectors if isinstance(selectors, list) else []:
            if isinstance(selector, Mapping):
                pending.extend(
                    other
                    for other, obj in live.items()
                    if other not in needed and selector_matches(selector, labels_of(obj))
                )
    marker = min((name for name, obj in live.items() if is_bootstrap(obj)), default=None)
    if marker is not None:
        needed.add(marker)
    return [live[name] for name in sorted(needed) if name in live]


@dataclass
class ScopeResult:
    findings: list[Finding] = field(default_factory=list)
    capabilities: list[SubjectCapability] = field(default_factory=list)
    controls: dict[tuple[str, str], bool] = field(default_factory=dict)
    exemptions: Counter[str] = field(default_factory=Counter)
    # When the earliest active exemption here expires: its findings come back then, with no event.
    next_expiry: datetime | None = None
    # The latest exemption expiry here that has passed (admission's floor of "now" is the latest of all scopes).
    last_expiry: datetime | None = None


@dataclass(frozen=True)
class AuditTotals:
    """The whole cluster's result, assembled from the scopes."""

    findings: list[Finding]
    capabilities: list[SubjectCapability]
    controls: dict[tuple[str, str], bool]
    exemptions: dict[str, int]


def _split_by_home(snapshot: ClusterSnapshot, scopes: set[str]) -> dict[str, ClusterSnapshot]:
    """Objects by the scope they live in (a Namespace lives in itself), so each exemption is counted once."""
    homes: dict[str, ClusterSnapshot] = {scope: ClusterSnapshot() for scope in scopes}
    for attr in set(KIND_FIELDS.values()):
        for obj in getattr(snapshot, attr):
            home = name_of(obj) if obj.get("kind") == "Namespace" else namespace_of(obj)
            if home in homes:
                homes[home].add(obj)
    return homes


def _capability_order(capability: SubjectCapability) -> tuple[str, str, str]:
    return capability.namespace, capability.service_account, capability.capability


def audit_scopes(snapshot: ClusterSnapshot, ctx: AuditContext, scopes: set[str] | None) -> dict[str, ScopeResult]:
    """Audit a (sub-)snapshot and partition the results by scope; scopes=None keeps every scope."""
    findings = run_audit(snapshot, ctx)
    capabilities = service_account_capabilities(snapshot, ctx, scopes)  # (only those of the scopes are kept)
    controls = namespace_controls(snapshot, ctx)
    keep = scopes
    results: dict[str, ScopeResult] = defaultdict(ScopeResult)
    if keep is None:
        keep = {CLUSTER, *(name_of(ns) for ns in snapshot.namespaces), *snapshot.namespace_names()}
        keep |= {f.namespace for f in findings} | {c.namespace for c in capabilities}
    for scope in keep:
        results[scope] = ScopeResult()
    for finding in findings:
        if finding.namespace in keep:
            results[finding.namespace].findings.append(finding)
    for capability in sorted(capabilities, key=_capability_order):
        if capability.namespace in keep:
            results[capability.namespace].capabilities.append(capability)
    for (namespace, control), in_place in controls.items():
        if namespace in keep:
            results[namespace].controls[(namespace, control)] = in_place
    for scope, own in _split_by_home(snapshot, keep).items():
        results[scope].exemptions = Counter(exemption_counts(own, ctx))
        known = [e for e in exemptions_in(own) if isinstance(e, Exemption)]
        results[scope].next_expiry = min((e.until for e in known if e.is_active(ctx.now)), default=None)
        results[scope].last_expiry = max((e.until for e in known if not e.is_active(ctx.now)), default=None)
    return dict(results)


class IncrementalAudit:
    """The current audit result, kept by scope and updated one batch of changes at a time."""

    def __init__(self) -> None:
        self.index = DependencyIndex()
        self.scopes: dict[str, ScopeResult] = {}
        # What the permission index derives from each binding and role, kept from one audit to the next: a
        # cluster-scope re-audit would otherwise derive all ClusterRoleBindings and ClusterRoles again.
        self.kept_permissions = KeptPermissions()

    def observe(self, kind: str, old: Obj | None, new: Obj | None) -> set[str]:
        return self.index.observe(kind, old, new)

    def full(self, source: ObjectSource, ctx: AuditContext, snapshot: ClusterSnapshot) -> None:
        """Recompute everything (start, relist safety net, periodic expiry check). Without the kept permission
        parts: a whole cluster's bindings would fill them with what the next re-audits mostly do not need."""
        self.scopes = audit_scopes(snapshot, ctx, None)

    def update(
        self, source: ObjectSource, ctx: AuditContext, scopes: set[str], snapshot: ClusterSnapshot | None = None
    ) -> set[str]:
        """Re-audit the given scopes (on `snapshot`, their scoped_snapshot when the caller already took it);
        returns the scopes whose results changed."""
        if ALL in scopes:  # every scope, and those named beside ALL (a ServiceAccount's namespace may hold nothing)
            scopes = (scopes - {ALL}) | {CLUSTER, *self.scopes, *(name_of(ns) for ns in source.objects("Namespace"))}
            scopes |= self._all_namespaced_scopes(source)
            snapshot = None
        if snapshot is None:
            snapshot = scoped_snapshot(source, self.index, scopes)
        ctx.cache[KEPT_PERMISSIONS] = self.kept_permissions
        fresh = audit_scopes(snapshot, ctx, scopes)
        changed: set[str] = set()
        for scope in scopes:
            result = fresh.get(scope, ScopeResult())
            empty = not (result.findings or result.capabilities or result.controls or +result.exemptions)
            previous = self.scopes.get(scope)
            if previous is None or _differs(previous, result):
                changed.add(scope)
            if empty and scope not in _live_scopes(source, scope):
                self.scopes.pop(scope, None)
            else:
                self.scopes[scope] = result
        return changed

    @staticmethod
    def _all_namespaced_scopes(source: ObjectSource) -> set[str]:
        return {namespace_of(obj) for kind in NAMESPACED_KINDS for obj in source.objects(kind)}

    def totals(self) -> AuditTotals:
        """Findings and capabilities grouped by scope, scopes in name order, each scope's in the order its audit
        gave them (findings by sort_key, capabilities by namespace, ServiceAccount, capability): no global sort.
        Sorting ~40,000 findings took ~0.2-0.4 s of a re-audit that changed a result, and no consumer needs it:
        metrics count, reports and Events order what they write themselves."""
        ordered = [self.scopes[scope] for scope in sorted(self.scopes)]
        findings = list(chain.from_iterable(r.findings for r in ordered))  # C-level: ~40,000 at each publish
        capabilities = list(chain.from_iterable(r.capabilities for r in ordered))
        # In (namespace, control) order: a scope's controls are its own namespace's, so sorting each scope's few
        # in scope order gives it without sorting all ~10,000 together (31 of the 54 ms of totals at full scale).
        controls = {key: r.controls[key] for r in ordered for key in sorted(r.controls)}
        exemptions: Counter[str] = Counter()
        for r in self.scopes.values():
            if r.exemptions:  # (most scopes have none)
                exemptions.update(r.exemptions)
        base = dict.fromkeys(("active", "expired", "invalid"), 0)
        return AuditTotals(findings, capabilities, controls, {**base, **exemptions})

    def next_expiry(self) -> tuple[datetime, set[str]] | None:
        """The earliest exemption expiry and the scopes it happens in."""
        expiries = [(r.next_expiry, scope) for scope, r in self.scopes.items() if r.next_expiry is not None]
        if not expiries:
            return None
        first = min(when for when, _ in expiries if when is not None)
        return first, {scope for when, scope in expiries if when == first}

    def passed_expiries(self) -> list[datetime]:
        """Every scope's latest exemption expiry that has passed."""
        return [r.last_expiry for r in self.scopes.values() if r.last_expiry is not None]

    def findings_in(self, scope: str) -> list[Finding]:
        """Safe beside a running update: update replaces a scope's result, never changes one in place."""
        result = self.scopes.get(scope)
        return list(result.findings) if result is not None else []


def _live_scopes(source: ObjectSource, scope: str) -> set[str]:
    """{scope} when anything still lives there (keeps empty-but-existing namespaces listed)."""
    if scope == CLUSTER or source.get("Namespace", "", scope) is not None:
        return {scope}
    return set()


def _differs(a: ScopeResult, b: ScopeResult) -> bool:
    return (
        {f.key: f for f in a.findings} != {f.key: f for f in b.findings}
        or set(a.capabilities) != set(b.capabilities)
        or a.controls != b.controls
        or +a.exemptions != +b.exemptions
    )
