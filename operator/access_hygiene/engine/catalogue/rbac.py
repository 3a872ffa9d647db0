"""RBAC rules AH-RBAC-001..022, evaluated on effective permissions (engine/rbac/permissions.py).

Binding rules report one finding per (binding, subject); role rules one per Role/ClusterRole.
Default RBAC objects that kube-apiserver recreates on every start (label
kubernetes.io/bootstrapping=rbac-defaults, autoupdate not "false") are skipped: they cannot be
fixed by editing them. Subjects matching ctx.excluded_subject_prefixes are skipped. Bindings that
grant everything (`*` on `*` in `*`) are reported by AH-RBAC-001 only, not by every other rule.
Severities are raised one step for findings in ctx.privileged_namespaces.
"""

from collections.abc import Callable, Iterator

from access_hygiene.engine.catalogue.binding_walk import (
    binding_check,
    binding_pattern_check,
    binding_severity,
    flagged,
    grants_everything,
)
from access_hygiene.engine.catalogue.registry import RULES, rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, labels_of, name_of, namespace_of
from access_hygiene.engine.rbac.capabilities import (
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
    NODES_PROXY,
    PV_CREATE,
    RBAC_WRITE,
    SECRETS_READ,
    SECRETS_WRITE,
    SIGNER_APPROVE,
    TOKEN_CREATE,
    WEBHOOK_WRITE,
    grant_text,
    has_wildcard,
    pattern_bit,
    pattern_masks,
    register_pattern,
    rules_grant,
)
from access_hygiene.engine.rbac.permissions import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    MASTERS_GROUP,
    RBAC_API_VERSION,
    READ_VERBS,
    UNAUTHENTICATED_GROUP,
    Binding,
    PermissionIndex,
    PolicyRule,
    RuleSet,
    is_bootstrap,
    is_excluded,
    permission_index,
)
from access_hygiene.models.findings import Finding, ObjectRef, Severity

AGGREGATE_LABELS = {
    "rbac.authorization.k8s.io/aggregate-to-admin": "admin",
    "rbac.authorization.k8s.io/aggregate-to-edit": "edit",
    "rbac.authorization.k8s.io/aggregate-to-view": "view",
}
# Roles every cluster has: a partial manifest dump binding them is not "binding a missing role".
BUILTIN_CLUSTER_ROLES = frozenset({"cluster-admin", "admin", "edit", "view"})


def _severity(rule_id: str, namespace: str, ctx: AuditContext) -> Severity:
    base = RULES[rule_id].severity
    return base.raised() if namespace in ctx.privileged_namespaces else base


def _scope(binding: Binding) -> str:
    return f"in namespace {binding.namespace}" if binding.namespace else "cluster-wide"


def _binding_findings(snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str) -> Iterator[Finding]:
    """One finding per non-excluded subject of each binding the rule's check (@binding_check) flags."""
    for binding, detail, subjects in flagged(snapshot, ctx, rule_id):
        severity = binding_severity(rule_id, binding.namespace, ctx)
        tail = f"{detail} {_scope(binding)} via {binding.role_ref.kind}/{binding.role_ref.name}"
        for subject in subjects:
            yield Finding.trusted(rule_id, severity, binding.namespace, binding.ref, f"{subject} {tail}", subject)


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


# (object, kind, namespace, name) of every non-bootstrap ClusterRole and Role.
_RoleEntry = tuple[Obj, str, str, str]


def _role_objects(snapshot: ClusterSnapshot, ctx: AuditContext) -> list[_RoleEntry]:
    """The roles the role rules judge (cached per audit in ctx.cache, keyed by the permission index)."""
    index = permission_index(snapshot, ctx)
    cached = ctx.cache.get("rbac_roles")
    if cached is not None and cached[0] is index:
        return cached[1]  # type: ignore[no-any-return]
    roles: list[_RoleEntry] = []
    for kind, objects in (("ClusterRole", snapshot.cluster_roles), ("Role", snapshot.roles)):
        for obj in objects:
            if is_bootstrap(obj):
                continue
            # By kind: a ClusterRole has no namespace, even when its manifest carries one (the API server drops it).
            roles.append((obj, kind, namespace_of(obj) if kind == "Role" else "", name_of(obj)))
    ctx.cache["rbac_roles"] = (index, roles)
    return roles


def _ref(kind: str, namespace: str, name: str) -> ObjectRef:
    return ObjectRef(kind=kind, name=name, namespace=namespace, api_version=RBAC_API_VERSION)


def _role_findings(
    snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str, check: Callable[[PolicyRule], bool], detail: str
) -> Iterator[Finding]:
    """One finding per role with own rules the check flags; aggregated ClusterRoles are skipped (their
    sources are reported instead). Rules are those the permission index parsed, not parsed again."""
    index = permission_index(snapshot, ctx)
    for obj, kind, namespace, name in _role_objects(snapshot, ctx):
        if obj.get("aggregationRule"):
            continue
        offending = [r for r in index.stored_rules(obj) if check(r)]
        if offending:
            yield Finding(
                rule_id=rule_id,
                severity=_severity(rule_id, namespace, ctx),
                namespace=namespace,
                object=_ref(kind, namespace, name),
                message=f"{kind} {name} {detail}: " + "; ".join(r.describe() for r in offending),
            )


# --- the catalogue ---------------------------------------------------------------------------------


@binding_check("AH-RBAC-001", include_superuser=True)
def _cluster_admin_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    return "holds */*/* (cluster-admin equivalent)" if grants_everything(binding) else None


@rule("AH-RBAC-001", Severity.CRITICAL, "Subject is cluster-admin or holds */*/*")
def cluster_admin(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A binding grants every verb on every resource in every API group (cluster-admin or equivalent)."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-001")


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


binding_pattern_check("AH-RBAC-005", IMPERSONATE, "can {granted}", include_named=True)


@rule("AH-RBAC-005", Severity.CRITICAL, "Subject can impersonate users, groups or service accounts")
def impersonate(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """impersonate lets a subject act as any (or the named) identity, including more privileged ones."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-005")


binding_pattern_check("AH-RBAC-006", ESCALATE, "can {granted} (write roles beyond its own permissions)")


@rule("AH-RBAC-006", Severity.CRITICAL, "Subject can escalate roles")
def escalate(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """escalate on roles/clusterroles lets a subject write roles with permissions it does not hold."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-006")


def _privileged_role_names(index: PermissionIndex, ctx: AuditContext) -> frozenset[str]:
    """Names of roles that are privileged to bind (cached per index in ctx.cache)."""
    cached = ctx.cache.get("rbac_privileged_roles")
    if cached is not None and cached[0] is index:
        return cached[1]  # type: ignore[no-any-return]
    names = {"cluster-admin", "admin", "edit"}
    escalate_or_bind, impersonate = pattern_bit(ESCALATE) | pattern_bit(BIND), pattern_bit(IMPERSONATE)
    for (_, _, name), rules in index.role_rules.items():
        if isinstance(rules, RuleSet):  # the same tests as below, from the role's pattern masks
            named, unnamed = pattern_masks(rules)
            if rules.grants_everything or unnamed & escalate_or_bind or named & impersonate:
                names.add(name)
            continue
        dangerous = any(r.is_superuser for r in rules) or rules_grant(rules, ESCALATE) or rules_grant(rules, BIND)
        if dangerous or rules_grant(rules, IMPERSONATE, include_named=True):
            names.add(name)
    result = frozenset(names)
    ctx.cache["rbac_privileged_roles"] = (index, result)
    return result


@binding_check("AH-RBAC-007", requires_named=(BIND,))
def _bind_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    if not rules_grant(binding.rules, BIND, include_named=True):
        return None  # neither branch below can apply
    privileged = _privileged_role_names(index, ctx)
    for r in binding.rules:
        if rules_grant([r], BIND):
            return f"can bind any role ({grant_text([r], BIND)})"
        if rules_grant([r], BIND, include_named=True) and r.resource_names & privileged:
            return f"can bind privileged roles {', '.join(sorted(r.resource_names & privileged))}"
    return None


@rule("AH-RBAC-007", Severity.HIGH, "Subject can bind privileged roles")
def bind(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """bind lets a subject create bindings to roles it does not hold (any role, or the named privileged ones)."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-007")


@binding_check("AH-RBAC-008", requires_named=(TOKEN_CREATE,), requires=(SECRETS_WRITE,))
def _token_mint_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    if rules_grant(binding.rules, TOKEN_CREATE, include_named=True):
        return f"can {grant_text(binding.rules, TOKEN_CREATE, include_named=True)} (mint service-account tokens)"
    privileged = not binding.namespace or binding.namespace in ctx.privileged_namespaces
    if privileged and rules_grant(binding.rules, SECRETS_WRITE):
        granted = grant_text(binding.rules, SECRETS_WRITE)
        return f"can {granted} (mint legacy tokens, replace credentials)"
    return None


@rule("AH-RBAC-008", Severity.HIGH, "Subject can mint service-account tokens or write secrets in privileged namespaces")
def token_mint(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """serviceaccounts/token create issues tokens for any service account in scope; writing Secrets in a
    privileged namespace (or cluster-wide) can mint legacy tokens and replace credentials there."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-008")


binding_pattern_check("AH-RBAC-009", SECRETS_READ, "can {granted}")


@rule("AH-RBAC-009", Severity.HIGH, "Subject can read secrets")
def read_secrets(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """get, list or watch on all secrets in scope (named-secret access is not reported); the message names the
    verbs granted (`list` alone returns every secret's data too)."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-009")


binding_pattern_check("AH-RBAC-010", NODES_PROXY, "can {granted} (reach the kubelet API)", cluster_scoped=True)


@rule("AH-RBAC-010", Severity.CRITICAL, "Subject can use nodes/proxy")
def nodes_proxy(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """nodes/proxy reaches the kubelet API (exec in any pod on the node), bypassing admission and audit."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-010")


binding_pattern_check("AH-RBAC-011", WEBHOOK_WRITE, "can {granted} (admission control)", cluster_scoped=True)


@rule("AH-RBAC-011", Severity.CRITICAL, "Subject can write admission webhooks or policies")
def webhook_write(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Admission webhooks/policies see and can change every object written to the cluster."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-011")


@binding_check("AH-RBAC-012", cluster_scoped=True, per_binding=True, requires_named=(SIGNER_APPROVE,))
def _csr_approval_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    if not rules_grant(binding.rules, SIGNER_APPROVE, include_named=True):
        return None
    if rules_grant(binding.rules, CSR_APPROVE):  # the binding itself (a cluster-wide one) grants the approval too
        return "can approve certificate signing requests"
    for subject in binding.subjects:
        holders = index.bindings_for(subject)
        if any(not b.namespace and rules_grant(b.rules, CSR_APPROVE) for _, b in holders):
            return "can approve certificate signing requests"
    return None


@rule("AH-RBAC-012", Severity.HIGH, "Subject can approve certificate signing requests")
def csr_approval(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Approving CSRs (approval subresource plus approve on a signer) can issue client certificates."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-012")


binding_pattern_check("AH-RBAC-013", EXEC, "can {granted} (run commands in pods)")


@rule("AH-RBAC-013", Severity.HIGH, "Subject can exec or attach into pods")
def pods_exec(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """pods/exec or pods/attach runs commands as the pod's identity, with its mounted secrets."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-013")


binding_pattern_check("AH-RBAC-014", EPHEMERAL_CONTAINERS, "can {granted} (add containers to running pods)")


@rule("AH-RBAC-014", Severity.HIGH, "Subject can add ephemeral containers to pods")
def ephemeral_containers(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """pods/ephemeralcontainers lets a subject run arbitrary containers inside existing pods."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-014")


@binding_check("AH-RBAC-015", requires=(CREATE_PODS, CREATE_WORKLOADS))
def _create_pods_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    if rules_grant(binding.rules, CREATE_PODS):
        return "can create pods"
    if rules_grant(binding.rules, CREATE_WORKLOADS):
        return f"can {grant_text(binding.rules, CREATE_WORKLOADS)} (pod-template control: runs pods)"
    return None


@rule("AH-RBAC-015", Severity.MEDIUM, "Subject can create pods or control workload pod templates")
def create_pods(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Creating pods, or creating/updating/patching a workload controller's pod template (Deployments,
    StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, ReplicationControllers), runs any image as any
    service account in scope."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-015")


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


_IMPERSONATE_PEOPLE = register_pattern((("impersonate",), ("", "authentication.k8s.io"), ("users", "groups")))


def _escalating_for(target: str, rules: tuple[PolicyRule, ...]) -> list[str]:
    reasons = []
    for name, pattern in [("escalate", ESCALATE), ("bind", BIND), ("nodes/proxy", NODES_PROXY),
                          ("admission webhooks", WEBHOOK_WRITE), ("CSR approval", SIGNER_APPROVE),
                          ("token creation", TOKEN_CREATE)]:  # fmt: skip
        if rules_grant(rules, pattern, include_named=True):
            reasons.append(name)
    if rules_grant(rules, _IMPERSONATE_PEOPLE, include_named=True):
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
    for obj, kind, namespace, name in _role_objects(snapshot, ctx):
        if kind != "ClusterRole":
            continue
        labels = labels_of(obj)
        rules = index.role_rules.get(("ClusterRole", "", name), ())
        for label, target in AGGREGATE_LABELS.items():
            reasons = _escalating_for(target, rules) if labels.get(label) == "true" else []
            if reasons:
                yield Finding(
                    rule_id="AH-RBAC-018",
                    severity=_severity("AH-RBAC-018", "", ctx),
                    namespace="",
                    object=_ref(kind, namespace, name),
                    message=f"ClusterRole {name} is aggregated into {target} and adds {', '.join(reasons)}",
                )


@binding_check("AH-RBAC-019", requires=(CONFIGMAP_WRITE,))
def _kube_system_configmaps_check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
    if binding.namespace in ("", "kube-system") and rules_grant(binding.rules, CONFIGMAP_WRITE):
        return f"can {grant_text(binding.rules, CONFIGMAP_WRITE)} (kube-system's configure control-plane add-ons)"
    return None


@rule("AH-RBAC-019", Severity.HIGH, "Subject can write ConfigMaps in kube-system")
def kube_system_configmaps(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """kube-system ConfigMaps configure control-plane add-ons (coredns, kube-proxy, auth config)."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-019")


binding_pattern_check("AH-RBAC-020", PV_CREATE, "can {granted}", cluster_scoped=True)


@rule("AH-RBAC-020", Severity.MEDIUM, "Subject can create PersistentVolumes")
def create_persistent_volumes(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A PersistentVolume can be a hostPath: creating one gives pods access to the node's filesystem."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-020")


binding_pattern_check("AH-RBAC-021", EVENTS_DELETE, "can {granted}")


@rule("AH-RBAC-021", Severity.LOW, "Subject can delete events")
def delete_events(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Deleting events hides the traces of other actions."""
    yield from _binding_findings(snapshot, ctx, "AH-RBAC-021")


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
