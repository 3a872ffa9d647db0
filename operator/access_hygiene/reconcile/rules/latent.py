"""AH-RBAC-024: latent risk in Roles and ClusterRoles that nothing binds.

Charts and manifest repositories ship ClusterRoles without their bindings (or the binding lives elsewhere),
so the effective-permission rules (AH-RBAC-001..012) have nobody to report. A risky role that no binding in
the snapshot references, and that no aggregating ClusterRole selects, is reported here as "latent", one
severity step below the effective-permission rule it would trigger once bound. A bound role keeps the
effective findings on its bindings instead; a role aggregated into another is judged through that one
(AH-RBAC-018 for admin/edit/view). Default (bootstrap) roles are skipped. Latent findings have their own
rule id, so metrics count them apart from effective ones.
"""

from collections.abc import Iterator

from access_hygiene.models.findings import Finding, ObjectRef, Severity
from access_hygiene.reconcile.bootstrap_roles import with_bootstrap_roles
from access_hygiene.reconcile.permissions import (
    BIND,
    CSR_APPROVE,
    ESCALATE,
    IMPERSONATE,
    NODES_PROXY,
    RBAC_API_VERSION,
    SECRETS_READ,
    SIGNER_APPROVE,
    WEBHOOK_WRITE,
    PolicyRule,
    is_bootstrap,
    permission_index,
    rules_grant,
    selector_matches,
)
from access_hygiene.reconcile.rules import RULES, AuditContext, rule
from access_hygiene.reconcile.snapshot import ClusterSnapshot, Obj, labels_of, name_of, namespace_of

RULE_ID = "AH-RBAC-024"
_ORDER = list(Severity)


def lowered(severity: Severity) -> Severity:
    """One step less severe (low stays low)."""
    return _ORDER[max(severity.rank - 1, 0)]


def risky_capabilities(rules: tuple[PolicyRule, ...], *, cluster_role: bool) -> list[tuple[str, str]]:
    """(capability, effective rule id) for each risky pattern the rules grant, most severe rule first.
    Cluster-scoped capabilities (nodes/proxy, webhooks, CSR approval) count only for ClusterRoles."""
    if any(r.is_superuser for r in rules):
        return [("*/*/* (cluster-admin equivalent)", "AH-RBAC-001")]
    found: list[tuple[str, str]] = []
    checks = [
        ("impersonate", IMPERSONATE, True, "AH-RBAC-005"),
        ("escalate", ESCALATE, False, "AH-RBAC-006"),
        ("bind", BIND, False, "AH-RBAC-007"),
        ("secrets read", SECRETS_READ, False, "AH-RBAC-009"),
    ]
    if cluster_role:
        checks += [
            ("nodes/proxy", NODES_PROXY, False, "AH-RBAC-010"),
            ("admission webhook writes", WEBHOOK_WRITE, False, "AH-RBAC-011"),
        ]
    for capability, pattern, include_named, rule_id in checks:
        if rules_grant(rules, pattern, include_named=include_named):
            found.append((capability, rule_id))
    approve = rules_grant(rules, SIGNER_APPROVE, include_named=True) and rules_grant(rules, CSR_APPROVE)
    if cluster_role and approve:
        found.append(("CSR approval", "AH-RBAC-012"))
    return sorted(found, key=lambda item: -RULES[item[1]].severity.rank)


def _aggregated_names(cluster_roles: list[Obj]) -> set[str]:
    """ClusterRoles some aggregating ClusterRole selects (their rules reach that role's holders)."""
    selectors = [
        (name_of(obj), selector)
        for obj in cluster_roles
        for selector in ((obj.get("aggregationRule") or {}).get("clusterRoleSelectors") or [])
        if isinstance(selector, dict)
    ]
    if not selectors:
        return set()
    selected: set[str] = set()
    for obj in cluster_roles:
        name, labels = name_of(obj), labels_of(obj)
        if labels and any(owner != name and selector_matches(s, labels) for owner, s in selectors):
            selected.add(name)
    return selected


@rule(RULE_ID, Severity.HIGH, "Role nothing binds grants risky permissions (latent)")
def latent_roles(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A Role or ClusterRole that no binding references (and no aggregating ClusterRole selects) grants
    cluster-admin equivalence, impersonate, escalate, bind, secrets read, nodes/proxy, admission webhook
    writes or CSR approval: whoever binds it later gets them. Reported one severity step below the
    effective-permission rule the role would trigger once bound (AH-RBAC-001..012). Narrower `*` verbs or
    resources are reported on the role whether bound or not (AH-RBAC-016/017)."""
    index = permission_index(snapshot, ctx)
    bound = {(b.role_ref.kind, b.role_ref.namespace, b.role_ref.name) for b in index.bindings if b.role_found}
    aggregated = _aggregated_names(with_bootstrap_roles(snapshot.cluster_roles))
    roles = [("ClusterRole", obj) for obj in snapshot.cluster_roles] + [("Role", obj) for obj in snapshot.roles]
    for kind, obj in roles:
        if is_bootstrap(obj):
            continue
        # By kind: a ClusterRole has no namespace, even when its manifest carries one (the API server drops it).
        namespace, name = namespace_of(obj) if kind == "Role" else "", name_of(obj)
        if (kind, namespace, name) in bound or (kind == "ClusterRole" and name in aggregated):
            continue
        rules = index.role_rules.get((kind, namespace, name), ())
        capabilities = risky_capabilities(rules, cluster_role=kind == "ClusterRole")
        if not capabilities:
            continue
        severity = lowered(RULES[capabilities[0][1]].severity)
        if namespace in ctx.privileged_namespaces:
            severity = severity.raised()
        yield Finding(
            rule_id=RULE_ID,
            severity=severity,
            namespace=namespace,
            object=ObjectRef(kind=kind, name=name, namespace=namespace, api_version=RBAC_API_VERSION),
            message=f"{kind} {name} is not bound by any binding in the scan but grants "
            f"{', '.join(c for c, _ in capabilities)} (latent: whoever binds it gets them; "
            f"{', '.join(dict.fromkeys(r for _, r in capabilities))} once bound)",
        )
