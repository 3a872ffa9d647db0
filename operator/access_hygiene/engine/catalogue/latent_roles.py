"""AH-RBAC-024: latent risk in Roles and ClusterRoles that nothing binds.

Charts and manifest repositories ship ClusterRoles without their bindings (or the binding lives elsewhere),
so the effective-permission rules have nobody to report. A role that no binding in the snapshot references,
and that no aggregating ClusterRole selects, is judged as if it were bound: a ClusterRole by a
ClusterRoleBinding (cluster-wide), a Role by a RoleBinding in its namespace. Every binding rule of the
catalogue (catalogue/binding_walk.py: AH-RBAC-001, 005..015, 019..021, 025..029) that would flag that binding is
named in one latent finding, one severity step below the most severe finding it would give once bound. The
list is the catalogue's, not a copy: a binding rule added later is covered too. The AH-RBAC rules that are
not about what a role grants are listed in NOT_LATENT with the reason.

A bound role keeps the effective findings on its bindings instead; a role aggregated into another is judged
through that one (AH-RBAC-018 for admin/edit/view). Default (bootstrap) roles are skipped. Latent findings
have their own rule id, so metrics count them apart from effective ones.
"""

from collections.abc import Iterator

from access_hygiene.engine.catalogue.binding_walk import binding_rules_flagging, binding_severity
from access_hygiene.engine.catalogue.registry import rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.selectors import selector_matches
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, labels_of, name_of, namespace_of
from access_hygiene.engine.rbac.bootstrap_roles import with_bootstrap_roles
from access_hygiene.engine.rbac.permissions import RBAC_API_VERSION, Binding, is_bootstrap, permission_index
from access_hygiene.models.findings import Finding, ObjectRef, Severity

RULE_ID = "AH-RBAC-024"
_ORDER = list(Severity)

# The AH-RBAC rules a latent role is not judged by, and why. Every other AH-RBAC rule must be a binding rule
# (tests/unit/test_rules_latent.py holds the catalogue to this).
NOT_LATENT: dict[str, str] = {
    "AH-RBAC-002": "about the subjects a binding names (anonymous/unauthenticated), not what a role grants",
    "AH-RBAC-003": "about the subjects a binding names (system:authenticated), not what a role grants",
    "AH-RBAC-004": "about the subjects a binding names (system:masters), not what a role grants",
    "AH-RBAC-016": "reported on the role itself, bound or not",
    "AH-RBAC-017": "reported on the role itself, bound or not",
    "AH-RBAC-018": "reported on the role itself (its aggregation labels), bound or not",
    "AH-RBAC-022": "about a binding whose role is missing",
    "AH-RBAC-023": "needs audit-log usage of a bound subject",
    RULE_ID: "this rule",
}


def lowered(severity: Severity) -> Severity:
    """One step less severe (low stays low)."""
    return _ORDER[max(severity.rank - 1, 0)]


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
    """A Role or ClusterRole that no binding references (and no aggregating ClusterRole selects) grants what a
    binding rule reports (AH-RBAC-001, 005..015, 019..021, 025..029: cluster-admin equivalence, impersonate,
    escalate, bind, token minting, secrets reads and writes, nodes/proxy, admission webhooks, CSR approval,
    exec/attach, ephemeral containers, pod and workload writes, kube-system ConfigMaps, PersistentVolumes,
    event deletes, traffic writes, port-forward, rebinding, broad deletes): whoever binds it later gets that.
    Judged as bound cluster-wide (a ClusterRole) or in its namespace (a Role); one finding naming every rule
    it would trigger, one severity step below the most severe of them. `*` verbs or resources are reported on
    the role whether bound or not (AH-RBAC-016/017)."""
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
        if not rules:
            continue
        ref = ObjectRef.trusted(kind, name, namespace, RBAC_API_VERSION)
        # The binding whoever binds it would create: no subjects (the checks judge what the role grants).
        hypothetical = Binding(ref, ref, namespace, (), rules, True, False)
        flagged = binding_rules_flagging(hypothetical, ctx, index)
        if not flagged:
            continue
        severities = {rule_id: binding_severity(rule_id, namespace, ctx) for rule_id, _ in flagged}
        flagged.sort(key=lambda item: (-severities[item[0]].rank, item[0]))
        scope = f"in namespace {namespace}" if namespace else "cluster-wide"
        yield Finding(
            rule_id=RULE_ID,
            severity=lowered(severities[flagged[0][0]]),
            namespace=namespace,
            object=ref,
            message=f"{kind} {name} is not bound by any binding in the scan (latent: whoever binds it gets this); "
            f"bound {scope}, it would trigger " + "; ".join(f"{rule_id}: {said}" for rule_id, said in flagged),
        )
