"""Reconciling one AccessPolicy: parse, check the grant ceiling, render, plan, and (enforce) write.

Level-triggered: the same call serves create, update, resume and the drift timer. It writes only
what the plan says differs, so a no-op reconcile makes zero writes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import kubernetes
from pydantic import ValidationError

from access_hygiene.engine.planning.policy_plan import ObjectKey, Plan, is_owned_by, plan_changes
from access_hygiene.engine.planning.policy_status import (
    api_server_degradation,
    count_policy_findings,
    dns_degradation,
    status_to_wire,
)
from access_hygiene.engine.planning.validation import manifest_problems
from access_hygiene.engine.rbac.grant_ceiling import (
    CeilingViolation,
    check_grant_ceiling,
    refusal_reason,
    requested_resources,
)
from access_hygiene.k8s import resources
from access_hygiene.k8s.discovery import ServedResourcesCache
from access_hygiene.k8s.errors import api_error_message
from access_hygiene.models.findings import Finding
from access_hygiene.models.policy import AccessPolicySpec, ResolvedPolicy, resolve_policy
from access_hygiene.models.status import AccessPolicyStatus, ConditionStatus, GeneratedRef, PlannedChange, set_condition
from access_hygiene.render.policy import POLICY_UID_LABEL, ClusterFacts, render_policy
from access_hygiene.settings import OperatorSettings

NAMESPACED_KINDS = (
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
CLUSTER_KINDS = (
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
)
REJECTED_STATUSES = frozenset({400, 403, 422})
APPLY_ORDER = {"RoleBinding": 1, "ClusterRoleBinding": 1}
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# (condition status, reason, message)
Verdict = tuple[ConditionStatus, str, str]


@dataclass
class SyncResult:
    status: dict[str, Any]
    outcome: str  # success | refused | conflict | invalid
    writes: int = 0
    plan: Plan | None = None
    ceiling_violations: list[CeilingViolation] = field(default_factory=list)


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = "spec"
        for step in item["loc"]:
            location += f"[{step}]" if isinstance(step, int) else f".{step}"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


class PolicyObjects(Protocol):
    """Where observed objects come from: the watch cache (engine/audit/incremental.py's ObjectSource)."""

    def in_namespace(self, kind: str, namespace: str) -> list[Any]: ...

    def objects(self, kind: str) -> list[Any]: ...

    def get(self, kind: str, namespace: str, name: str) -> Any: ...


def _with_type(obj: Mapping[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    return {**obj, "apiVersion": api_version, "kind": kind}


def observe(source: PolicyObjects, policy: ResolvedPolicy, desired: list[dict[str, Any]]) -> list[Any]:
    """Objects this policy owns (owner reference or policy-uid label) plus any object holding a desired name.
    Read from memory: no LIST, and no label selector built from the (possibly long) policy name."""
    seen: dict[ObjectKey, dict[str, Any]] = {}
    for api_version, kind in NAMESPACED_KINDS:
        for obj in source.in_namespace(kind, policy.namespace):
            if is_owned_by(obj, policy.uid):
                typed = _with_type(obj, api_version, kind)
                seen[ObjectKey.of_manifest(typed)] = typed
    for api_version, kind in CLUSTER_KINDS:
        for obj in source.objects(kind):
            if ((obj.get("metadata") or {}).get("labels") or {}).get(POLICY_UID_LABEL) == policy.uid:
                typed = _with_type(obj, api_version, kind)
                seen[ObjectKey.of_manifest(typed)] = typed
    for manifest in desired:
        key = ObjectKey.of_manifest(manifest)
        if key not in seen:
            live = source.get(key.kind, key.namespace, key.name)
            if live is not None:
                seen[key] = _with_type(live, key.api_version, key.kind)
    return list(seen.values())


def grant_ceiling_rules(source: PolicyObjects, cluster_role: str) -> list[dict[str, Any]] | None:
    """Rules of the ceiling ClusterRole, or None when it does not exist."""
    role = source.get("ClusterRole", "", cluster_role)
    if role is None:
        return None
    return [dict(rule) for rule in role.get("rules") or []]


def cluster_facts(source: PolicyObjects, settings: OperatorSettings) -> ClusterFacts:
    """(ip, port) pairs behind default/kubernetes (what pods really dial after kube-proxy DNAT), DNS selector."""
    endpoints: set[tuple[str, int]] = set()
    for slice_ in source.in_namespace("EndpointSlice", "default"):
        if ((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) != "kubernetes":
            continue
        ports = [int(p["port"]) for p in slice_.get("ports") or [] if p.get("port")]
        for endpoint in slice_.get("endpoints") or []:
            for address in endpoint.get("addresses") or []:
                endpoints.update((str(address), port) for port in ports)
    return ClusterFacts(
        api_server_endpoints=tuple(sorted(endpoints)),
        dns_namespace=settings.dns_namespace,
        dns_pod_labels=tuple(sorted(settings.dns_pod_labels.items())),
    )


def _ref(key: ObjectKey) -> GeneratedRef:
    return GeneratedRef(api_version=key.api_version, kind=key.kind, name=key.name, namespace=key.namespace)


def _apply_order(manifest: Mapping[str, Any]) -> int:
    """Grants last: a binding is written only after everything else of the policy was accepted."""
    return APPLY_ORDER.get(str(manifest.get("kind")), 0)


def _rollback(api: kubernetes.client.ApiClient, created: list[dict[str, Any]]) -> int:
    """Delete what this reconcile created (newest first), each only in the incarnation we created."""
    removed = 0
    for obj in reversed(created):
        key = ObjectKey.of_manifest(obj)
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        if resources.delete(api, key.api_version, key.kind, key.name, key.namespace, uid=uid):
            removed += 1
    return removed


def sync_policy(
    api: kubernetes.client.ApiClient,
    body: Mapping[str, Any],
    settings: OperatorSettings,
    now: datetime,
    source: PolicyObjects,
    findings: Sequence[Finding] = (),
    discovery: ServedResourcesCache | None = None,
) -> SyncResult:
    """Reconcile one policy against the observed objects in `source`. All or nothing: every refusal
    (invalid spec, grant ceiling, name conflict, labels the API would reject) is decided before the
    first write, and if the API server still rejects a write, what this call created is removed."""
    metadata = dict(body.get("metadata") or {})
    previous = list(((body.get("status") or {}).get("conditions")) or [])
    generation = int(metadata.get("generation") or 0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def finish(outcome: str, ready: Verdict, degraded: Verdict, **extra: Any) -> SyncResult:
        conditions = [
            set_condition(
                previous, type_=type_, status=status, reason=reason, message=message, generation=generation, now=stamp
            )
            for type_, (status, reason, message) in (("Ready", ready), ("Degraded", degraded))
        ]
        status = AccessPolicyStatus(observed_generation=generation, conditions=conditions, **extra)
        return SyncResult(status=status_to_wire(status), outcome=outcome)

    def refuse(outcome: str, reason: str, message: str, **extra: Any) -> SyncResult:
        return finish(outcome, ("False", reason, message), ("True", reason, message), **extra)

    try:
        spec = AccessPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        return refuse("invalid", "InvalidSpec", format_validation_error(error))

    policy = resolve_policy(metadata, spec)
    mode = spec.mode or settings.mode
    # status.serviceAccount (the SERVICEACCOUNT column) names the ServiceAccount only when it exists: a refused
    # or audit-mode policy writes none. The enforce path below names it once it is applied.
    exists = source.get("ServiceAccount", policy.namespace, policy.service_account_name) is not None
    base = {"mode": mode, "service_account": policy.service_account_name if exists else ""}

    ceiling = grant_ceiling_rules(source, settings.grant_ceiling_cluster_role)
    needs_ceiling = bool(spec.rbac.rules or spec.rbac.cluster_rules)
    if needs_ceiling and ceiling is None:
        message = (
            f"grant ceiling ClusterRole {settings.grant_ceiling_cluster_role!r} not found; "
            "no RBAC is generated until it exists"
        )
        return refuse("refused", "GrantCeilingMissing", message, **base)
    violations = check_grant_ceiling(
        policy,
        ceiling or [],
        allowed_sensitive=frozenset(settings.allowed_sensitive_capabilities),
        allow_cluster_rules=settings.allow_cluster_rules,
        # API discovery names unknown resources precisely ("configmapz is not served; did you mean configmaps?")
        served=discovery.get(api, require=requested_resources(policy)) if discovery is not None else None,
    )
    if violations:
        message = "; ".join(v.reason for v in violations)
        reason = refusal_reason(violations)
        outcome = "invalid" if reason == "InvalidSpec" else "refused"
        result = refuse(outcome, reason, message, violations=len(violations), **base)
        result.ceiling_violations = violations
        return result

    facts = cluster_facts(source, settings)
    desired = render_policy(policy, facts)
    problems = manifest_problems(desired)
    if problems:
        return refuse("invalid", "InvalidSpec", "; ".join(problems), violations=len(problems), **base)
    observed = observe(source, policy, desired)
    plan = plan_changes(desired, observed, policy.uid)
    generated = [_ref(ObjectKey.of_manifest(m)) for m in desired]
    planned = [
        *(
            PlannedChange(
                action="apply",
                kind=m["kind"],
                name=m["metadata"]["name"],
                namespace=m["metadata"].get("namespace", ""),
            )
            for m in plan.apply
        ),
        *(PlannedChange(action="prune", kind=k.kind, name=k.name, namespace=k.namespace) for k in plan.prune),
        *(
            PlannedChange(
                action="conflict",
                kind=c.key.kind,
                name=c.key.name,
                namespace=c.key.namespace,
                detail=c.reason,
            )
            for c in plan.conflicts
        ),
    ]
    if plan.conflicts:
        # Nothing is written: applying the rest could bind the policy's ServiceAccount to a Role it does not own.
        message = "; ".join(f"{c.key.kind} {c.key.name}: {c.reason}" for c in plan.conflicts)
        return refuse(
            "conflict",
            "NameConflict",
            f"nothing was written: {message}",
            generated=generated,
            planned_changes=planned,
            violations=len(plan.conflicts),
            **base,
        )

    scan_violations = count_policy_findings(findings, policy.namespace, policy.service_account_name)
    writes = 0
    if mode == "enforce":
        existing = {ObjectKey.of_manifest(obj) for obj in observed}
        created: list[dict[str, Any]] = []
        for manifest in sorted(plan.apply, key=_apply_order):
            key = ObjectKey.of_manifest(manifest)
            try:
                applied = resources.apply(api, manifest)
            except kubernetes.client.ApiException as error:
                # Invalid (400/422) or refused by RBAC's escalation check (403): retrying cannot help.
                if error.status not in REJECTED_STATUSES:
                    raise
                removed = _rollback(api, created)
                message = (
                    f"the API server rejected {key}: {api_error_message(error)}; "
                    f"{removed} object(s) created by this reconcile were removed again"
                )
                result = refuse("refused", "ApplyRejected", message, generated=generated, violations=1, **base)
                result.writes = writes + removed
                return result
            writes += 1
            if key not in existing:
                created.append(_with_type(applied, key.api_version, key.kind))
        for key in plan.prune:
            live = resources.get(api, key.api_version, key.kind, key.name, key.namespace)
            if live is not None and is_owned_by(live, policy.uid):
                resources.delete(
                    api, key.api_version, key.kind, key.name, key.namespace, uid=str(live["metadata"]["uid"])
                )
                writes += 1
        planned = []

    if mode == "audit":
        pending = len(plan.apply) + len(plan.prune)
        message = (
            f"audit mode: {pending} change(s) would be made; see status.plannedChanges"
            if pending
            else "audit mode: live objects already match the policy"
        )
        result = finish(
            "success",
            ("True", "AuditOnly", message),
            ("False", "AsExpected", ""),
            generated=generated,
            planned_changes=planned,
            violations=scan_violations,
            **base,
        )
    else:
        message = f"{len(desired)} object(s) in place"
        degradations = [
            d
            for d in (
                api_server_degradation(policy, desired, facts.api_server_endpoints),
                dns_degradation(
                    policy,
                    desired,
                    source.in_namespace("NetworkPolicy", policy.namespace),
                    settings.audit_context(now=now),
                    source.get("Namespace", "", settings.dns_namespace),
                ),
            )
            if d is not None
        ]
        degraded: Verdict = (
            ("True", degradations[0][0], "; ".join(message for _, message in degradations))
            if degradations
            else ("False", "AsExpected", "")
        )
        result = finish(
            "success",
            ("True", "Reconciled", message),
            degraded,
            generated=generated,
            violations=scan_violations,
            **{**base, "service_account": policy.service_account_name},
        )
    result.writes = writes
    result.plan = plan
    return result


def prune_policy_objects(api: kubernetes.client.ApiClient, body: Mapping[str, Any], source: PolicyObjects) -> int:
    """On delete: remove everything the policy owns, found by owner reference or policy-uid label (never by a
    label built from the name, which may be longer than a label value). Garbage collection would get the
    namespaced ones too, but only after it discovers the CRD; cluster-scoped ones have no owner GC at all."""
    uid = str((body.get("metadata") or {}).get("uid") or "")
    if not uid:
        return 0
    policy = resolve_policy(dict(body.get("metadata") or {}), AccessPolicySpec())
    deleted = 0
    for live in observe(source, policy, []):
        key = ObjectKey.of_manifest(live)
        if is_owned_by(live, uid) and resources.delete(
            api, key.api_version, key.kind, key.name, key.namespace, uid=str(live["metadata"]["uid"])
        ):
            deleted += 1
    return deleted
