"""RBAC rules AH-RBAC-025..029: writes that redirect traffic or replace credentials, port-forwarding,
rebinding, broad deletes.

Same conventions as catalogue/rbac.py: one finding per (binding, non-excluded subject); default (bootstrap)
bindings are skipped; bindings that grant everything are left to AH-RBAC-001; severities are raised one
step in ctx.privileged_namespaces. The checks run in the one walk over the bindings that every binding rule
shares (catalogue/binding_walk.py), remembered per role and scope class.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from access_hygiene.engine.catalogue.binding_walk import binding_check, binding_severity, flagged
from access_hygiene.engine.catalogue.registry import rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.capabilities import (
    SECRETS_WRITE,
    SECRETS_WRITE_DELETE,
    Pattern,
    grant_text,
    pattern_bit,
    pattern_masks,
    register_pattern,
    rules_grant,
)
from access_hygiene.engine.rbac.permissions import Binding, PermissionIndex, PolicyRule, RuleSet
from access_hygiene.models.findings import Finding, Severity

WRITE = ("create", "update", "patch", "delete", "deletecollection")
TRAFFIC_KINDS: tuple[tuple[str, Pattern], ...] = (
    ("NetworkPolicies", register_pattern((WRITE, ("networking.k8s.io", "extensions"), ("networkpolicies",)))),
    ("Services", register_pattern((WRITE, ("",), ("services",)))),
    ("Endpoints", register_pattern((WRITE, ("",), ("endpoints",)))),
    ("EndpointSlices", register_pattern((WRITE, ("discovery.k8s.io",), ("endpointslices",)))),
    ("Ingresses", register_pattern((WRITE, ("networking.k8s.io", "extensions"), ("ingresses",)))),
)
# Since Kubernetes 1.31 a websocket (GET) port-forward is authorised as `create` too.
PORT_FORWARD: Pattern = register_pattern((("create",), ("",), ("pods/portforward",)))
REBIND: Pattern = register_pattern(
    (("update", "patch"), ("rbac.authorization.k8s.io",), ("rolebindings", "clusterrolebindings"))
)
NAMESPACED_REBIND: Pattern = register_pattern((("update", "patch"), ("rbac.authorization.k8s.io",), ("rolebindings",)))
# Distinct resources a subject may delete before "broad delete" applies (admin/edit delete ~30).
BROAD_DELETE_RESOURCES = 10

# A description of what the binding grants when the rule applies, else None.
BindingCheck = Callable[[Binding, AuditContext], str | None]


def _secrets_write_delete(binding: Binding, ctx: AuditContext) -> str | None:
    if not rules_grant(binding.rules, SECRETS_WRITE_DELETE):
        return None
    privileged = not binding.namespace or binding.namespace in ctx.privileged_namespaces
    if privileged and rules_grant(binding.rules, SECRETS_WRITE):
        return None  # AH-RBAC-008 reports writes there
    granted = grant_text(binding.rules, SECRETS_WRITE_DELETE)
    return f"can {granted} (replace or remove credentials other workloads mount)"


_TRAFFIC_BITS = [(pattern, pattern_bit(pattern)) for _, pattern in TRAFFIC_KINDS]


def _traffic_write(binding: Binding, _: AuditContext) -> str | None:
    rules = binding.rules
    if isinstance(rules, RuleSet):  # all five patterns at once
        granted = pattern_masks(rules)[1]
        patterns = [pattern for pattern, bit in _TRAFFIC_BITS if granted & bit]
    else:
        patterns = [pattern for _, pattern in TRAFFIC_KINDS if rules_grant(rules, pattern)]
    if not patterns:
        return None
    return f"can {grant_text(rules, *patterns)} (delete the default deny or redirect traffic)"


def _port_forward(binding: Binding, _: AuditContext) -> str | None:
    return "can port-forward to pods" if rules_grant(binding.rules, PORT_FORWARD) else None


def _rebind(binding: Binding, _: AuditContext) -> str | None:
    # A RoleBinding reaches RoleBindings of its namespace only.
    pattern = NAMESPACED_REBIND if binding.namespace else REBIND
    if not rules_grant(binding.rules, pattern):
        return None
    return f"can {grant_text(binding.rules, pattern)} (rebind subjects to roles it holds, no bind verb needed)"


# API groups in which `*` resources means "any resource": every group, and the core group (pods, secrets,
# configmaps, services, persistentvolumeclaims, serviceaccounts, ...). `*` in another group means only the
# resources that group serves (external.metrics.k8s.io, metrics.k8s.io: metrics, nothing a deleter can break).
ANY_RESOURCE_GROUPS = frozenset({"*", ""})


@dataclass(frozen=True)
class Deletable:
    """What the rules let a subject delete (delete/deletecollection, without resourceNames restriction)."""

    anywhere: tuple[str, ...]  # delete verbs granted on `*` resources in `*` or the core group
    every_group: bool  # ... and in every API group (not only the core one)
    kinds: dict[str, tuple[str, ...]]  # "group/resource" (or "group/*" for `*` in another group) -> delete verbs


def _delete_verbs(rule: PolicyRule) -> tuple[str, ...]:
    return tuple(v for v in ("delete", "deletecollection") if v in rule.verbs or "*" in rule.verbs)


def deletable_resources(rules: tuple[PolicyRule, ...]) -> Deletable:
    """What the rules let a subject delete. Subresources do not count; `*` resources count as "any resource" only
    in every group or the core group, and as one kind per other group (which resources a group serves is not
    known offline)."""
    anywhere: set[str] = set()
    every_group = False
    kinds: dict[str, set[str]] = {}
    for r in rules:
        verbs = _delete_verbs(r)
        if r.resource_names or not verbs:
            continue
        resources = [res for res in r.resources if "/" not in res]
        if "*" in resources:
            if r.api_groups & ANY_RESOURCE_GROUPS:
                anywhere.update(verbs)
                every_group = every_group or "*" in r.api_groups
            for group in r.api_groups - ANY_RESOURCE_GROUPS:
                kinds.setdefault(f"{group}/*", set()).update(verbs)
            resources.remove("*")
        for group in r.api_groups:
            for res in resources:
                kinds.setdefault(f"{group}/{res}", set()).update(verbs)
    ordered = ("delete", "deletecollection")
    return Deletable(
        tuple(v for v in ordered if v in anywhere),
        every_group,
        {kind: tuple(v for v in ordered if v in verbs) for kind, verbs in sorted(kinds.items())},
    )


def _broad_delete(binding: Binding, _: AuditContext) -> str | None:
    deletable = deletable_resources(binding.rules)
    if deletable.anywhere:
        where = "in every API group" if deletable.every_group else "of the core API group"
        return f"can {'/'.join(deletable.anywhere)} any resource (`*`) {where}"
    # Kinds: distinct resource names (the same resource in two groups is one kind), one per `group/*`.
    by_kind: dict[str, set[str]] = {}
    for kind, verbs in deletable.kinds.items():
        resource = kind.partition("/")[2]
        by_kind.setdefault(kind if resource == "*" else resource, set()).update(verbs)
    if len(by_kind) < BROAD_DELETE_RESOURCES:
        return None
    counts = {verb: sum(verb in verbs for verbs in by_kind.values()) for verb in ("delete", "deletecollection")}
    granted = [verb for verb, count in counts.items() if count]
    if all(counts[verb] == len(by_kind) for verb in granted):
        return f"can {'/'.join(granted)} {len(by_kind)} kinds of resources"
    each = ", ".join(f"{verb} {count}" for verb, count in counts.items() if count)
    return f"can delete or deletecollection {len(by_kind)} kinds of resources ({each})"


CHECKS: dict[str, BindingCheck] = {
    "AH-RBAC-025": _secrets_write_delete,
    "AH-RBAC-026": _traffic_write,
    "AH-RBAC-027": _port_forward,
    "AH-RBAC-028": _rebind,
    "AH-RBAC-029": _broad_delete,
}
# Rules whose findings are raised one step cluster-wide (besides privileged namespaces).
_RAISED_CLUSTER_WIDE = frozenset({"AH-RBAC-025"})


def _walk_check(check: BindingCheck) -> Callable[[Binding, AuditContext, PermissionIndex], str | None]:
    def walk_check(binding: Binding, ctx: AuditContext, _: PermissionIndex) -> str | None:
        return check(binding, ctx) if binding.rules else None

    return walk_check


# Patterns one of which a role must grant for the check to flag it (the walk skips the others from their masks).
_REQUIRES: dict[str, tuple[Pattern, ...]] = {
    "AH-RBAC-025": (SECRETS_WRITE_DELETE,),
    "AH-RBAC-026": tuple(pattern for _, pattern in TRAFFIC_KINDS),
    "AH-RBAC-027": (PORT_FORWARD,),
    "AH-RBAC-028": (REBIND,),
}

for _rule_id, _check in CHECKS.items():  # evaluated in the walk over the bindings that catalogue/rbac.py shares
    binding_check(_rule_id, raised_cluster_wide=_rule_id in _RAISED_CLUSTER_WIDE, requires=_REQUIRES.get(_rule_id, ()))(
        _walk_check(_check)
    )


def _scope(binding: Binding) -> str:
    return f"in namespace {binding.namespace}" if binding.namespace else "cluster-wide"


def _findings(snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str) -> Iterator[Finding]:
    for binding, detail, subjects in flagged(snapshot, ctx, rule_id):
        role = binding.role_ref
        severity = binding_severity(rule_id, binding.namespace, ctx)
        tail = f"{detail} {_scope(binding)} via {role.kind}/{role.name}"
        for subject in subjects:
            yield Finding.trusted(rule_id, severity, binding.namespace, binding.ref, f"{subject} {tail}", subject)


@rule("AH-RBAC-025", Severity.MEDIUM, "Subject can write or delete Secrets")
def secrets_write_delete(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """create/update/patch/delete/deletecollection on all Secrets in scope: a writer can replace the
    credentials, certificates and configuration other workloads mount, a deleter can break them. Medium in a
    namespace, high cluster-wide or in a privileged namespace (writes there are AH-RBAC-008's)."""
    yield from _findings(snapshot, ctx, "AH-RBAC-025")


@rule("AH-RBAC-026", Severity.MEDIUM, "Subject can write NetworkPolicies, Services, Endpoints or Ingresses")
def traffic_write(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Writing NetworkPolicies deletes the default deny; writing Services, Endpoints/EndpointSlices or
    Ingresses redirects other workloads' traffic (to intercept it or to expose a pod)."""
    yield from _findings(snapshot, ctx, "AH-RBAC-026")


@rule("AH-RBAC-027", Severity.MEDIUM, "Subject can port-forward to pods")
def port_forward(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """pods/portforward reaches any port of any pod in scope from outside the cluster, past Services,
    Ingresses and NetworkPolicies."""
    yield from _findings(snapshot, ctx, "AH-RBAC-027")


@rule("AH-RBAC-028", Severity.MEDIUM, "Subject can update or patch role bindings")
def rebind(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """update/patch on RoleBindings/ClusterRoleBindings rewrites who holds an existing role: with no bind
    verb a subject can still hand any role it holds (or add subjects to a powerful binding it can edit)
    to other identities."""
    yield from _findings(snapshot, ctx, "AH-RBAC-028")


@rule("AH-RBAC-029", Severity.MEDIUM, "Subject can delete broadly")
def broad_delete(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """delete/deletecollection on any resource or on ten or more kinds of resources in scope: one credential
    can wipe out workloads, their configuration and their data. "Any resource" is `*` resources in apiGroups
    `*` or the core group ""; `*` in another group (metrics.k8s.io, external.metrics.k8s.io, apps, ...) is only
    that group's resources and counts as one kind. Subresources and resourceNames-limited rules do not count.
    The message names the delete verbs granted."""
    yield from _findings(snapshot, ctx, "AH-RBAC-029")
