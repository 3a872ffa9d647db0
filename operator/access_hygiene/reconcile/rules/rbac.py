"""RBAC rules AH-RBAC-001..022, evaluated on effective permissions (reconcile/permissions.py).

Binding rules report one finding per (binding, subject); role rules one per Role/ClusterRole.
Default RBAC objects that kube-apiserver recreates on every start (label
kubernetes.io/bootstrapping=rbac-defaults, autoupdate not "false") are skipped: they cannot be
fixed by editing them. Subjects matching ctx.excluded_subject_prefixes are skipped. Bindings that
grant everything (`*` on `*` in `*`) are reported by AH-RBAC-001 only, not by every other rule.
Severities are raised one step for findings in ctx.privileged_namespaces.
"""

from collections.abc import Callable, Iterator

from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from access_hygiene.reconcile.permissions import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    BIND,
    CONFIGMAP_WRITE,
    CREATE_PODS,
    CREATE_WORKLOADS,
    CSR_APPROVE,
    EPHEMERAL_CONTAINERS,
    ESCALATE,
    EVENTS_DELETE,
    EXEC,
    IMPERSONATE,
    MASTERS_GROUP,
    NODES_PROXY,
    PV_CREATE,
    RBAC_API_VERSION,
    RBAC_WRITE,
    READ_VERBS,
    SECRETS_READ,
    SECRETS_WRITE,
    SIGNER_APPROVE,
    TOKEN_CREATE,
    UNAUTHENTICATED_GROUP,
    WEBHOOK_WRITE,
    Binding,
    Pattern,
    PolicyRule,
    RuleSet,
    has_wildcard,
    is_bootstrap,
    is_excluded,
    permission_index,
    rules_grant,
)
from access_hygiene.reconcile.rules import RULES, AuditContext, rule
from access_hygiene.reconcile.snapshot import ClusterSnapshot, Obj, labels_of, name_of, namespace_of

AGGREGATE_LABELS = {
    "rbac.authorization.k8s.io/aggregate-to-admin": "admin",
    "rbac.authorization.k8s.io/aggregate-to-edit": "edit",
    "rbac.authorization.k8s.io/aggregate-to-view": "view",
}
# Roles every cluster has: a partial manifest dump binding them is not "binding a missing role".
BUILTIN_CLUSTER_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})

# Returns a description of what the binding grants when the rule applies, else None.
BindingCheck = Callable[[Binding, AuditContext], str | None]


def _severity(rule_id: str, namespace: str, ctx: AuditContext) -> Severity:
    base = RULES[rule_id].severity
    return base.raised() if namespace in ctx.privileged_namespaces else base


def _scope(binding: Binding) -> str:
    return f"in namespace {binding.namespace}" if binding.namespace else "cluster-wide"


def _grants_everything(binding: Binding) -> bool:
    rules = binding.rules
    return rules.grants_everything if isinstance(rules, RuleSet) else any(r.is_superuser for r in rules)


# (binding, its non-excluded subjects, grants everything) for every non-bootstrap binding with such subjects.
_WalkEntry = tuple[Binding, tuple[Subject, ...], bool]


def _binding_walk(snapshot: ClusterSnapshot, ctx: AuditContext) -> list[_WalkEntry]:
    """The one walk over all bindings that the binding rules share (cached per audit in ctx.cache): what
    every rule used to recompute per binding (bootstrap, excluded subjects, superuser) is done once here."""
    index = permission_index(snapshot, ctx)
    cached = ctx.cache.get("rbac_binding_walk")
    if cached is not None and cached[0] is index:
        return cached[1]  # type: ignore[no-any-return]
    walk: list[_WalkEntry] = []
    for binding in index.bindings:
        if binding.bootstrap:
            continue
        subjects = tuple(s for s in binding.subjects if not is_excluded(s, ctx))
        if subjects:
            walk.append((binding, subjects, _grants_everything(binding)))
    ctx.cache["rbac_binding_walk"] = (index, walk)
    return walk


def _binding_findings(
    snapshot: ClusterSnapshot,
    ctx: AuditContext,
    rule_id: str,
    check: BindingCheck,
    *,
    cluster_scoped: bool = False,
    include_superuser: bool = False,
) -> Iterator[Finding]:
    """One finding per non-excluded subject of each binding the check flags."""
    for binding, subjects, superuser in _binding_walk(snapshot, ctx):
        if (cluster_scoped and binding.namespace) or (superuser and not include_superuser):
            continue
        detail = check(binding, ctx)
        if detail is None:
            continue
        severity = _severity(rule_id, binding.namespace, ctx)
        for subject in subjects:
            yield Finding(
                rule_id=rule_id,
                severity=severity,
                namespace=binding.namespace,
                object=binding.ref,
                subject=subject,
                message=f"{subject} {detail} {_scope(binding)} via {binding.role_ref.kind}/{binding.role_ref.name}",
            )


def _pattern_check(pattern: Pattern, detail: str, *, include_named: bool = False) -> BindingCheck:
    def check(binding: Binding, ctx: AuditContext) -> str | None:
        return detail if rules_grant(binding.rules, pattern, include_named=include_named) else None

    return check


def _subject_check(kind: str, names: frozenset[str], detail: str) -> Callable[..., Iterator[Finding]]:
    """Bindings that name a specific well-known subject (reported whatever the role grants)."""

    def findings(snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str) -> Iterator[Finding]:
        index = permission_index(snapshot, ctx)
        positions = sorted({p for name in names for p in index.by_subject.get((kind, "", name), [])})
        for binding in (index.bindings[p] for p in positions):  # only the bindings naming one of these subjects
            if binding.bootstrap:
                continue
            for subject in binding.subjects:
                if subject.kind == kind and subject.name in names and not is_excluded(subject, ctx):
                    yield Finding(
                        rule_id=rule_id,
                        severity=_severity(rule_id, binding.namespace, ctx),
                        namespace=binding.namespace,
                        object=binding.ref,
                        subject=subject,
                        message=f"{binding.ref.kind} {binding.ref.name} {detail} {subject.name} "
                        f"({binding.role_ref.kind}/{binding.role_ref.name}, {_scope(binding)})",
                    )

    return findings


def _role_objects(snapshot: ClusterSnapshot) -> Iterator[tuple[Obj, ObjectRef]]:
    for obj in [*snapshot.cluster_roles, *snapshot.roles]:
        if is_bootstrap(obj):
            continue
        kind = str(obj.get("kind") or ("Role" if namespace_of(obj) else "ClusterRole"))
        yield obj, ObjectRef(kind=kind, name=name_of(obj), namespace=namespace_of(obj), api_version=RBAC_API_VERSION)


def _own_rules(obj: Obj) -> list[PolicyRule]:
    """A role's own rules; aggregated ClusterRoles are skipped (their sources are reported instead)."""
    if obj.get("aggregationRule"):
        return []
    return [PolicyRule.parse(r) for r in obj.get("rules") or [] if isinstance(r, dict)]


def _role_findings(
    snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str, check: Callable[[PolicyRule], bool], detail: str
) -> Iterator[Finding]:
    for obj, ref in _role_objects(snapshot):
        offending = [r for r in _own_rules(obj) if check(r)]
        if offending:
            yield Finding(
                rule_id=rule_id,
                severity=_severity(rule_id, ref.namespace, ctx),
                namespace=ref.namespace,
                object=ref,
                message=f"{ref.kind} {ref.name} {detail}: " + "; ".join(r.describe() for r in offending),
            )


# --- the catalogue ---------------------------------------------------------------------------------


@rule("AH-RBAC-001", Severity.CRITICAL, "Subject is cluster-admin or holds */*/*")
def cluster_admin(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A binding grants every verb on every resource in every API group (cluster-admin or equivalent)."""

    def check(binding: Binding, _: AuditContext) -> str | None:
        return "holds */*/* (cluster-admin equivalent)" if _grants_everything(binding) else None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-001", check, include_superuser=True)


@rule("AH-RBAC-002", Severity.CRITICAL, "Binding grants access to anonymous or unauthenticated users")
def anonymous_bindings(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A binding names system:anonymous or system:unauthenticated: anyone reaching the API gets it."""
    yield from _subject_check("User", frozenset({ANONYMOUS_USER}), "binds")(snapshot, ctx, "AH-RBAC-002")
    yield from _subject_check("Group", frozenset({UNAUTHENTICATED_GROUP}), "binds")(snapshot, ctx, "AH-RBAC-002")


@rule("AH-RBAC-003", Severity.HIGH, "Binding grants access to all authenticated users")
def authenticated_bindings(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A binding names system:authenticated: every user and every service account gets it."""
    yield from _subject_check("Group", frozenset({AUTHENTICATED_GROUP}), "binds")(snapshot, ctx, "AH-RBAC-003")


@rule("AH-RBAC-004", Severity.HIGH, "Binding names the system:masters group")
def masters_bindings(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """system:masters bypasses RBAC entirely; binding it hints at credentials minted into that group."""
    yield from _subject_check("Group", frozenset({MASTERS_GROUP}), "binds")(snapshot, ctx, "AH-RBAC-004")


@rule("AH-RBAC-005", Severity.CRITICAL, "Subject can impersonate users, groups or service accounts")
def impersonate(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """impersonate lets a subject act as any (or the named) identity, including more privileged ones."""
    check = _pattern_check(IMPERSONATE, "can impersonate identities", include_named=True)
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-005", check)


@rule("AH-RBAC-006", Severity.CRITICAL, "Subject can escalate roles")
def escalate(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """escalate on roles/clusterroles lets a subject write roles with permissions it does not hold."""
    check = _pattern_check(ESCALATE, "can escalate (write roles beyond its own permissions)")
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-006", check)


def _privileged_role_names(snapshot: ClusterSnapshot, ctx: AuditContext) -> frozenset[str]:
    names = {"cluster-admin", "admin", "edit"}
    for (_, _, name), rules in permission_index(snapshot, ctx).role_rules.items():
        dangerous = any(r.is_superuser for r in rules) or rules_grant(rules, ESCALATE) or rules_grant(rules, BIND)
        if dangerous or rules_grant(rules, IMPERSONATE, include_named=True):
            names.add(name)
    return frozenset(names)


@rule("AH-RBAC-007", Severity.HIGH, "Subject can bind privileged roles")
def bind(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """bind lets a subject create bindings to roles it does not hold (any role, or the named privileged ones)."""
    privileged = _privileged_role_names(snapshot, ctx)

    def check(binding: Binding, _: AuditContext) -> str | None:
        for r in binding.rules:
            if rules_grant([r], BIND):
                return "can bind any role"
            if rules_grant([r], BIND, include_named=True) and r.resource_names & privileged:
                return f"can bind privileged roles {', '.join(sorted(r.resource_names & privileged))}"
        return None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-007", check)


@rule("AH-RBAC-008", Severity.HIGH, "Subject can mint service-account tokens or write secrets in privileged namespaces")
def token_mint(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """serviceaccounts/token create issues tokens for any service account in scope; writing Secrets in a
    privileged namespace (or cluster-wide) can mint legacy tokens and replace credentials there."""

    def check(binding: Binding, ctx: AuditContext) -> str | None:
        if rules_grant(binding.rules, TOKEN_CREATE, include_named=True):
            return "can create service-account tokens"
        privileged = not binding.namespace or binding.namespace in ctx.privileged_namespaces
        if privileged and rules_grant(binding.rules, SECRETS_WRITE):
            return "can write secrets in a privileged namespace"
        return None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-008", check)


@rule("AH-RBAC-009", Severity.HIGH, "Subject can read secrets")
def read_secrets(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """get/list/watch on all secrets in scope (named-secret access is not reported)."""
    verbs = "/".join(READ_VERBS)
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-009", _pattern_check(SECRETS_READ, f"can {verbs} secrets"))


@rule("AH-RBAC-010", Severity.CRITICAL, "Subject can use nodes/proxy")
def nodes_proxy(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """nodes/proxy reaches the kubelet API (exec in any pod on the node), bypassing admission and audit."""
    check = _pattern_check(NODES_PROXY, "can reach kubelets through nodes/proxy")
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-010", check, cluster_scoped=True)


@rule("AH-RBAC-011", Severity.CRITICAL, "Subject can write admission webhooks or policies")
def webhook_write(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Admission webhooks/policies see and can change every object written to the cluster."""
    check = _pattern_check(WEBHOOK_WRITE, "can write admission webhook configurations or policies")
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-011", check, cluster_scoped=True)


@rule("AH-RBAC-012", Severity.HIGH, "Subject can approve certificate signing requests")
def csr_approval(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Approving CSRs (approval subresource plus approve on a signer) can issue client certificates."""
    index = permission_index(snapshot, ctx)

    def check(binding: Binding, _: AuditContext) -> str | None:
        if not rules_grant(binding.rules, SIGNER_APPROVE, include_named=True):
            return None
        for subject in binding.subjects:
            holders = index.bindings_for(subject)
            if any(not b.namespace and rules_grant(b.rules, CSR_APPROVE) for _, b in holders):
                return "can approve certificate signing requests"
        return None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-012", check, cluster_scoped=True)


@rule("AH-RBAC-013", Severity.HIGH, "Subject can exec or attach into pods")
def pods_exec(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """pods/exec or pods/attach runs commands as the pod's identity, with its mounted secrets."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-013", _pattern_check(EXEC, "can exec/attach into pods"))


@rule("AH-RBAC-014", Severity.HIGH, "Subject can add ephemeral containers to pods")
def ephemeral_containers(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """pods/ephemeralcontainers lets a subject run arbitrary containers inside existing pods."""
    check = _pattern_check(EPHEMERAL_CONTAINERS, "can add ephemeral containers to pods")
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-014", check)


@rule("AH-RBAC-015", Severity.MEDIUM, "Subject can create pods or control workload pod templates")
def create_pods(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Creating pods, or creating/updating/patching a workload controller's pod template (Deployments,
    StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, ReplicationControllers), runs any image as any
    service account in scope."""

    def check(binding: Binding, _: AuditContext) -> str | None:
        if rules_grant(binding.rules, CREATE_PODS):
            return "can create pods"
        if rules_grant(binding.rules, CREATE_WORKLOADS):
            return "can create or change workload controllers (pod-template control: runs pods)"
        return None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-015", check)


@rule("AH-RBAC-016", Severity.MEDIUM, "Role uses `*` verbs")
def wildcard_verbs(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """`*` verbs include escalate, bind, impersonate and verbs added in future releases."""
    yield from _role_findings(snapshot, ctx, "AH-RBAC-016", lambda r: "*" in r.verbs, "grants `*` verbs")


@rule("AH-RBAC-017", Severity.MEDIUM, "Role uses `*` resources, apiGroups or nonResourceURLs")
def wildcard_resources(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """`*` resources or apiGroups include secrets, subresources and every CRD installed later."""

    def check(r: PolicyRule) -> bool:
        return "*" in r.resources or "*" in r.api_groups or "*" in r.non_resource_urls

    yield from _role_findings(snapshot, ctx, "AH-RBAC-017", check, "grants `*` resources or apiGroups")


def _escalating_for(target: str, rules: tuple[PolicyRule, ...]) -> list[str]:
    reasons = []
    for name, pattern in [("escalate", ESCALATE), ("bind", BIND), ("nodes/proxy", NODES_PROXY),
                          ("admission webhooks", WEBHOOK_WRITE), ("CSR approval", SIGNER_APPROVE),
                          ("token creation", TOKEN_CREATE)]:  # fmt: skip
        if rules_grant(rules, pattern, include_named=True):
            reasons.append(name)
    if rules_grant(rules, (("impersonate",), ("", "authentication.k8s.io"), ("users", "groups")), include_named=True):
        reasons.append("impersonating users/groups")
    if any(has_wildcard(r) for r in rules):
        reasons.append("wildcards")
    if target in ("edit", "view") and rules_grant(rules, RBAC_WRITE, include_named=True):
        reasons.append("RBAC writes")
    if target == "view":
        if rules_grant(rules, SECRETS_READ, include_named=True):
            reasons.append("secrets read")
        if any(r.verbs - set(READ_VERBS) for r in rules if r.resources):
            reasons.append("write verbs")
    return reasons


@rule("AH-RBAC-018", Severity.HIGH, "ClusterRole aggregated into admin/edit/view escalates them")
def aggregation_escalation(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Labels aggregate-to-admin/edit/view silently add a ClusterRole's rules to the built-in roles that
    many subjects hold; escalating rules there raise every holder's privileges."""
    index = permission_index(snapshot, ctx)
    for obj, ref in _role_objects(snapshot):
        if ref.kind != "ClusterRole":
            continue
        labels = labels_of(obj)
        rules = index.role_rules.get(("ClusterRole", "", ref.name), ())
        for label, target in AGGREGATE_LABELS.items():
            reasons = _escalating_for(target, rules) if labels.get(label) == "true" else []
            if reasons:
                yield Finding(
                    rule_id="AH-RBAC-018",
                    severity=_severity("AH-RBAC-018", "", ctx),
                    namespace="",
                    object=ref,
                    message=f"ClusterRole {ref.name} is aggregated into {target} and adds {', '.join(reasons)}",
                )


@rule("AH-RBAC-019", Severity.HIGH, "Subject can write ConfigMaps in kube-system")
def kube_system_configmaps(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """kube-system ConfigMaps configure control-plane add-ons (coredns, kube-proxy, auth config)."""

    def check(binding: Binding, _: AuditContext) -> str | None:
        if binding.namespace in ("", "kube-system") and rules_grant(binding.rules, CONFIGMAP_WRITE):
            return "can write kube-system ConfigMaps"
        return None

    yield from _binding_findings(snapshot, ctx, "AH-RBAC-019", check)


@rule("AH-RBAC-020", Severity.MEDIUM, "Subject can create PersistentVolumes")
def create_persistent_volumes(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A PersistentVolume can be a hostPath: creating one gives pods access to the node's filesystem."""
    check = _pattern_check(PV_CREATE, "can create PersistentVolumes")
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-020", check, cluster_scoped=True)


@rule("AH-RBAC-021", Severity.LOW, "Subject can delete events")
def delete_events(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Deleting events hides the traces of other actions."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-021", _pattern_check(EVENTS_DELETE, "can delete events"))


def _has_bootstrap_roles(snapshot: ClusterSnapshot) -> bool:
    return any(is_bootstrap(obj) for obj in snapshot.cluster_roles)


@rule("AH-RBAC-022", Severity.LOW, "Binding references a role that does not exist")
def missing_role(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A dangling binding grants nothing now, but whoever creates a role with that name grants it."""
    partial_dump = not _has_bootstrap_roles(snapshot)
    for binding in permission_index(snapshot, ctx).bindings:
        role = binding.role_ref
        if binding.role_found or binding.bootstrap:
            continue
        builtin = role.kind == "ClusterRole" and (role.name in BUILTIN_CLUSTER_ROLES or role.name.startswith("system:"))
        if partial_dump and builtin:
            continue  # the dump simply does not include the default roles
        where = f" in namespace {role.namespace}" if role.namespace else ""
        yield Finding(
            rule_id="AH-RBAC-022",
            severity=_severity("AH-RBAC-022", binding.namespace, ctx),
            namespace=binding.namespace,
            object=binding.ref,
            message=f"{binding.ref.kind} {binding.ref.name} references missing {role.kind} {role.name}{where}",
        )
