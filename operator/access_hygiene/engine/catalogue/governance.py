"""Governance rules AH-GOV-001..004: policy-managed ServiceAccounts holding more than declared,
exemption bookkeeping, and desired state the operator cannot apply."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from access_hygiene.engine.catalogue.registry import rule, severity_for
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.controls import MANAGED_NAMES
from access_hygiene.engine.ground.exemptions import (
    EXPIRED_RULE_ID,
    EXPIRED_SEVERITY,
    MALFORMED_RULE_ID,
    MALFORMED_SEVERITY,
    bookkeeping_findings,
    namespace_is_exempt,
)
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, is_managed, meta, name_of, namespace_of
from access_hygiene.engine.rbac import permissions
from access_hygiene.engine.rbac.permissions import Grant, is_bootstrap, permission_index
from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject

if TYPE_CHECKING:  # the AccessPolicy models are imported when the snapshot holds AccessPolicies
    from access_hygiene.models.policy import PolicyRule, ResolvedPolicy

MAX_LISTED = 5  # excess grants quoted in a message


@dataclass(frozen=True)
class ManagedServiceAccount:
    policy: ObjectRef
    resolved: "ResolvedPolicy"


# Parsed policies of live objects by uid, with the resourceVersion they were parsed at (which names one content
# exactly): the operator re-audits the same unchanged policies on every event, and validating each spec again was
# most of a cluster-scope re-audit. One entry per policy: every status write gives a policy a new resourceVersion,
# and keeping each version's parse grew by ~8 KiB per write up to the limit (issue 26, memory).
_RESOLVED: dict[str, tuple[str, "ResolvedPolicy | None"]] = {}
_RESOLVED_LIMIT = 20_000


def _resolved(obj: Obj) -> "ResolvedPolicy | None":
    from access_hygiene.models.policy import AccessPolicySpec, resolve_policy

    metadata = meta(obj)
    uid, version = str(metadata.get("uid") or ""), str(metadata.get("resourceVersion") or "")
    known = _RESOLVED.get(uid) if uid and version else None
    if known is not None and known[0] == version:
        return known[1]
    try:
        resolved: ResolvedPolicy | None = resolve_policy(
            metadata, AccessPolicySpec.model_validate(obj.get("spec") or {})
        )
    except (ValidationError, KeyError, TypeError, ValueError):
        resolved = None
    if uid and version:
        if len(_RESOLVED) >= _RESOLVED_LIMIT and uid not in _RESOLVED:
            _RESOLVED.clear()  # (deleted policies' entries)
        _RESOLVED[uid] = (version, resolved)
    return resolved


def managed_service_accounts(
    snapshot: ClusterSnapshot, ctx: AuditContext | None = None
) -> dict[tuple[str, str], ManagedServiceAccount]:
    """(namespace, ServiceAccount name) -> the AccessPolicy that manages it (invalid policies skipped); once per
    audit when given the audit's context."""
    cached = ctx.cache.get("managed_service_accounts") if ctx is not None else None
    if isinstance(cached, tuple) and cached[0] is snapshot:
        found: dict[tuple[str, str], ManagedServiceAccount] = cached[1]
        return found
    result: dict[tuple[str, str], ManagedServiceAccount] = {}
    for obj in sorted(snapshot.access_policies, key=lambda o: (namespace_of(o), name_of(o))):
        resolved = _resolved(obj)
        if resolved is None:
            continue
        ref = ObjectRef(
            kind="AccessPolicy",
            name=resolved.name,
            namespace=resolved.namespace,
            api_version=str(obj.get("apiVersion") or ""),
        )
        result.setdefault((resolved.namespace, resolved.service_account_name), ManagedServiceAccount(ref, resolved))
    if ctx is not None:
        ctx.cache["managed_service_accounts"] = (snapshot, result)
    return result


def _declared(rules: list["PolicyRule"]) -> list[permissions.PolicyRule]:
    return [
        permissions.PolicyRule(
            verbs=frozenset(r.verbs),
            api_groups=frozenset(r.api_groups),
            resources=frozenset(r.resources),
            resource_names=frozenset(r.resource_names),
        )
        for r in rules
    ]


def _covered(grant: Grant, declared: list[permissions.PolicyRule]) -> bool:
    """Is the grant within one declared rule? Wildcards in the grant are compared literally, so `*`
    is covered only by a declared `*`; named grants by unnamed or superset-named rules."""
    if grant.non_resource_url:
        return False  # AccessPolicies cannot declare nonResourceURLs
    resource, _, subresource = grant.resource.partition("/")
    for rule_ in declared:
        if not rule_.allows_any_name(grant.verb, grant.api_group, resource, subresource):
            continue
        if not rule_.resource_names or (grant.resource_names and grant.resource_names <= rule_.resource_names):
            return True
    return False


def _excess(grants: list[Grant], policy: "ResolvedPolicy") -> list[str]:
    """The grants (all from one binding) that the policy's rules do not declare, described."""
    namespaced = _declared(policy.spec.rbac.rules)
    cluster = _declared(policy.spec.rbac.cluster_rules)
    excess = []
    for grant in grants:
        # A RoleBinding in the policy's namespace may use the namespaced rules; anything else needs cluster rules.
        allowed = [*cluster, *namespaced] if grant.namespace == policy.namespace else cluster
        if not _covered(grant, allowed):
            what = grant.non_resource_url or f"{grant.api_group or 'core'}/{grant.resource}"
            names = f" ({','.join(sorted(grant.resource_names))})" if grant.resource_names else ""
            excess.append(f"{grant.verb} {what}{names}")
    return list(dict.fromkeys(excess))


def _bindings_by_ref(snapshot: ClusterSnapshot) -> dict[tuple[str, str, str], Obj]:
    found: dict[tuple[str, str, str], Obj] = {}
    for kind, pool in (("RoleBinding", snapshot.role_bindings), ("ClusterRoleBinding", snapshot.cluster_role_bindings)):
        for obj in pool:
            found.setdefault((kind, namespace_of(obj) if kind == "RoleBinding" else "", name_of(obj)), obj)
    return found


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


@rule("AH-GOV-001", Severity.HIGH, "Policy-managed ServiceAccount holds more than its AccessPolicy declares")
def undeclared_grants(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A RoleBinding/ClusterRoleBinding the operator did not create gives an AccessPolicy's
    ServiceAccount permissions beyond the policy's rbac rules: the policy no longer describes the app."""
    index = permission_index(snapshot, ctx)
    managed_accounts = managed_service_accounts(snapshot, ctx)
    bindings = _bindings_by_ref(snapshot) if managed_accounts else {}
    for (namespace, sa_name), managed in sorted(managed_accounts.items()):
        sa = Subject(kind="ServiceAccount", name=sa_name, namespace=namespace)
        by_binding: dict[ObjectRef, list[Grant]] = {}
        for grant in index.direct_grants(sa):  # bindings naming the SA itself, not its groups
            by_binding.setdefault(grant.via_binding, []).append(grant)
        for ref, grants in sorted(by_binding.items(), key=lambda item: (item[0].namespace, item[0].name)):
            raw = bindings.get((ref.kind, ref.namespace, ref.name), {})
            if is_managed(raw) or is_bootstrap(raw):
                continue
            excess = _excess(grants, managed.resolved)
            if not excess:
                continue
            role = grants[0].via_role
            yield Finding(
                rule_id="AH-GOV-001",
                severity=severity_for("AH-GOV-001", ref.namespace or namespace, ctx),
                namespace=ref.namespace,
                object=ref,
                subject=sa,
                message=f"{ref.kind} {ref.name} gives {sa} {_listed(excess)} via {role.kind}/{role.name}, "
                f"beyond AccessPolicy {managed.policy.name}",
            )


@rule(EXPIRED_RULE_ID, EXPIRED_SEVERITY, "Exemption has expired")
def expired_exemptions(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """An accesshygiene.io/exempt annotation whose exempt-until has passed: it no longer applies.
    Renew it (with a new reason) or remove it."""
    yield from (f for f in bookkeeping_findings(snapshot, ctx) if f.rule_id == EXPIRED_RULE_ID)


@rule(MALFORMED_RULE_ID, MALFORMED_SEVERITY, "Exemption is malformed and ignored")
def malformed_exemptions(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """Exemption annotations missing owner, reason or expiry, with an unparsable date, or naming
    unknown rule ids: the exemption is ignored."""
    yield from (f for f in bookkeeping_findings(snapshot, ctx) if f.rule_id == MALFORMED_RULE_ID)


@rule("AH-GOV-004", Severity.MEDIUM, "Desired state is not applied")
def blocked_enforcement(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """An AccessPolicy is not Ready (Ready=False: refused by the grant ceiling, invalid, failing to
    apply), or a namespace control cannot be applied because an object the operator does not own
    already uses its name."""
    for obj in snapshot.access_policies:
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "False":
            continue
        ref = ObjectRef(
            kind="AccessPolicy",
            name=name_of(obj),
            namespace=namespace_of(obj),
            api_version=str(obj.get("apiVersion") or ""),
        )
        yield Finding(
            rule_id="AH-GOV-004",
            severity=severity_for("AH-GOV-004", ref.namespace, ctx),
            namespace=ref.namespace,
            object=ref,
            message=f"AccessPolicy {ref.name} is not Ready ({ready.get('reason') or 'no reason'}: "
            f"{ready.get('message') or 'no message'})",
        )
    namespaces = {name_of(ns): ns for ns in snapshot.namespaces}
    for policy in snapshot.network_policies:
        namespace = namespace_of(policy)
        if name_of(policy) not in MANAGED_NAMES or is_managed(policy):
            continue
        if namespace_is_exempt(namespaces.get(namespace, {"metadata": {"name": namespace}}), ctx, ctx.now):
            continue
        yield Finding(
            rule_id="AH-GOV-004",
            severity=severity_for("AH-GOV-004", namespace, ctx),
            namespace=namespace,
            object=ObjectRef(
                kind="NetworkPolicy", name=name_of(policy), namespace=namespace, api_version="networking.k8s.io/v1"
            ),
            message=f"NetworkPolicy {name_of(policy)} in {namespace} is not managed by access-hygiene, so the "
            "namespace control of that name is not applied; rename or remove it",
        )
