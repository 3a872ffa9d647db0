"""Reconciling one AccessPolicy: parse, check the grant ceiling, render, plan, and (enforce) write.

Level-triggered: the same call serves create, update, resume and the drift timer. It writes only
what the plan says differs, so a no-op reconcile makes zero writes.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kubernetes
from pydantic import ValidationError

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE, POLICY_LABEL
from access_hygiene.k8s import resources
from access_hygiene.k8s.cluster_facts import cluster_facts, grant_ceiling_rules
from access_hygiene.k8s.errors import api_error_message
from access_hygiene.models.findings import Finding
from access_hygiene.models.policy import AccessPolicySpec, ResolvedPolicy, resolve_policy
from access_hygiene.models.status import AccessPolicyStatus, ConditionStatus, GeneratedRef, PlannedChange
from access_hygiene.reconcile.ceiling import CeilingViolation, check_grant_ceiling
from access_hygiene.reconcile.plan import ObjectKey, Plan, is_owned_by, plan_changes
from access_hygiene.reconcile.status import count_policy_findings, set_condition, status_to_wire
from access_hygiene.render.policy import POLICY_UID_LABEL, render_policy
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


def observe(api: kubernetes.client.ApiClient, policy: ResolvedPolicy, desired: list[dict[str, Any]]) -> list[Any]:
    """Live objects this policy owns (by label) plus any live object holding a desired name."""
    seen: dict[ObjectKey, dict[str, Any]] = {}
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{POLICY_LABEL}={policy.name}"
    for api_version, kind in NAMESPACED_KINDS:
        for obj in resources.list_objects(api, api_version, kind, namespace=policy.namespace, label_selector=selector):
            seen[ObjectKey.of_manifest(obj)] = obj
    uid_selector = f"{POLICY_UID_LABEL}={policy.uid}"
    for api_version, kind in CLUSTER_KINDS:
        for obj in resources.list_objects(api, api_version, kind, label_selector=uid_selector):
            seen[ObjectKey.of_manifest(obj)] = obj
    for manifest in desired:
        key = ObjectKey.of_manifest(manifest)
        if key not in seen:
            live = resources.get(api, key.api_version, key.kind, key.name, key.namespace)
            if live is not None:
                live.setdefault("apiVersion", key.api_version)
                live["kind"] = key.kind
                seen[key] = live
    return list(seen.values())


def _ref(key: ObjectKey) -> GeneratedRef:
    return GeneratedRef(api_version=key.api_version, kind=key.kind, name=key.name, namespace=key.namespace)


def sync_policy(
    api: kubernetes.client.ApiClient,
    body: Mapping[str, Any],
    settings: OperatorSettings,
    now: datetime,
    findings: Sequence[Finding] = (),
) -> SyncResult:
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

    try:
        spec = AccessPolicySpec.model_validate(body.get("spec") or {})
    except ValidationError as error:
        message = format_validation_error(error)
        return finish("invalid", ("False", "InvalidSpec", message), ("True", "InvalidSpec", message))

    policy = resolve_policy(metadata, spec)
    mode = spec.mode or settings.mode
    base = {"mode": mode, "service_account": policy.service_account_name}

    ceiling = grant_ceiling_rules(api, settings.grant_ceiling_cluster_role)
    needs_ceiling = bool(spec.rbac.rules or spec.rbac.cluster_rules)
    if needs_ceiling and ceiling is None:
        message = (
            f"grant ceiling ClusterRole {settings.grant_ceiling_cluster_role!r} not found; "
            "no RBAC is generated until it exists"
        )
        return finish(
            "refused",
            ("False", "GrantCeilingMissing", message),
            ("True", "GrantCeilingMissing", message),
            **base,
        )
    violations = check_grant_ceiling(
        policy,
        ceiling or [],
        allowed_sensitive=frozenset(settings.allowed_sensitive_capabilities),
        allow_cluster_rules=settings.allow_cluster_rules,
    )
    if violations:
        message = "; ".join(v.reason for v in violations)
        result = finish(
            "refused",
            ("False", "GrantCeilingExceeded", message),
            ("True", "GrantCeilingExceeded", message),
            violations=len(violations),
            **base,
        )
        result.ceiling_violations = violations
        return result

    desired = render_policy(policy, cluster_facts(api, settings))
    plan = plan_changes(desired, observe(api, policy, desired), policy.uid)
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

    scan_violations = count_policy_findings(findings, policy.namespace, policy.service_account_name)
    writes = 0
    if mode == "enforce":
        conflicted = {c.key for c in plan.conflicts}
        rejected: list[str] = []
        for manifest in plan.apply:
            key = ObjectKey.of_manifest(manifest)
            if key in conflicted:
                continue
            try:
                resources.apply(api, manifest)
            except kubernetes.client.ApiException as error:
                # Invalid (400/422) or refused by RBAC's escalation check (403): retrying cannot help.
                if error.status not in REJECTED_STATUSES:
                    raise
                rejected.append(f"{key}: {api_error_message(error)}")
            else:
                writes += 1
        if rejected:
            message = "the API server rejected generated objects: " + "; ".join(rejected)
            result = finish(
                "refused",
                ("False", "ApplyRejected", message),
                ("True", "ApplyRejected", message),
                generated=generated,
                violations=len(rejected),
                **base,
            )
            result.writes = writes
            return result
        for key in plan.prune:
            live = resources.get(api, key.api_version, key.kind, key.name, key.namespace)
            if live is not None and is_owned_by(live, policy.uid):
                resources.delete(
                    api, key.api_version, key.kind, key.name, key.namespace, uid=str(live["metadata"]["uid"])
                )
                writes += 1
        planned = [p for p in planned if p.action == "conflict"]

    if plan.conflicts:
        message = "; ".join(f"{c.key.kind} {c.key.name}: {c.reason}" for c in plan.conflicts)
        result = finish(
            "conflict",
            ("False", "NameConflict", message),
            ("True", "NameConflict", message),
            generated=generated,
            planned_changes=planned,
            violations=len(plan.conflicts),
            **base,
        )
    elif mode == "audit":
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
        missing_api = (
            spec.network is not None
            and spec.network.kube_api_server
            and not any(m["kind"] == "NetworkPolicy" and "ipBlock" in str(m.get("spec")) for m in desired)
        )
        degraded: Verdict = (
            (
                "True",
                "APIServerEndpointsUnknown",
                "kubeAPIServer egress requested but the API server endpoints could not be discovered",
            )
            if missing_api
            else ("False", "AsExpected", "")
        )
        result = finish(
            "success",
            ("True", "Reconciled", message),
            degraded,
            generated=generated,
            violations=scan_violations,
            **base,
        )
    result.writes = writes
    result.plan = plan
    return result


def prune_policy_objects(api: kubernetes.client.ApiClient, body: Mapping[str, Any]) -> int:
    """On delete: remove everything the policy owns (cluster-scoped ones have no owner GC)."""
    metadata = dict(body.get("metadata") or {})
    policy = resolve_policy(metadata, AccessPolicySpec())
    deleted = 0
    for live in observe(api, policy, []):
        if is_owned_by(live, policy.uid):
            key = ObjectKey.of_manifest(live)
            if resources.delete(
                api, key.api_version, key.kind, key.name, key.namespace, uid=str(live["metadata"]["uid"])
            ):
                deleted += 1
    return deleted
