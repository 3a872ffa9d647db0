"""Namespace hygiene planning: what enforce mode would change in a namespace (the controls
to apply or prune, never over objects the operator does not own), which pods enforcing would likely break (the
forecast), and the summary annotation written back on the Namespace.

What pods run as and can reach, and which controls are in place, is read off the snapshot in ground/ (workloads.py,
network_policies.py, controls.py), which the hygiene rules share.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.controls import CONTROLS, MANAGED_NAMES, control_conflicts
from access_hygiene.engine.ground.exemptions import namespace_is_exempt
from access_hygiene.engine.ground.network_policies import dns_opt_outs, is_default_deny, isolated, policies_in
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, is_managed, labels_of, meta, name_of
from access_hygiene.engine.ground.workloads import service_account_of, token_mounted, workloads_of
from access_hygiene.engine.rbac.permissions import service_account_bindings
from access_hygiene.models.findings import Finding, ObjectRef, Severity
from access_hygiene.render.namespace import render_default_sa_patch, render_namespace_controls

SUMMARY_ANNOTATION = "accesshygiene.io/hygiene-summary"
SUMMARY_VERSION = 1


# Score penalty per non-exempted violation, by severity (see docs/rules.md, "Hygiene summary").
SCORE_PENALTY = {Severity.CRITICAL: 10, Severity.HIGH: 5, Severity.MEDIUM: 2, Severity.LOW: 0}
Impact = Literal["loses-token", "loses-dns", "loses-api-egress", "loses-ingress"]


@dataclass(frozen=True)
class BreakageForecast:
    namespace: str
    pod: str  # "Kind/name" of the pod or the workload producing it
    service_account: str
    impact: Impact
    reason: str


@dataclass(frozen=True)
class NamespacePlan:
    namespace: str
    exempt: bool
    apply: list[dict[str, Any]]  # server-side apply bodies, only what is missing or different
    findings: list[Finding]  # every rule's findings about this namespace, exemptions applied
    forecast: list[BreakageForecast]
    prune: list[ObjectRef] = field(default_factory=list)  # our objects no longer wanted (namespace exempted)


def _normalised(value: Any) -> Any:
    """Drop empty/None fields so API-defaulted and rendered objects compare by meaning."""
    if isinstance(value, dict):
        items = {k: _normalised(v) for k, v in value.items()}
        return {k: v for k, v in items.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_normalised(v) for v in value]
    return value


def _up_to_date(existing: Obj, desired: Obj) -> bool:
    labels = labels_of(existing)
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return False
    wanted_uids = {r["uid"] for r in desired["metadata"]["ownerReferences"]}
    uids = {str(r.get("uid")) for r in meta(existing).get("ownerReferences") or [] if isinstance(r, dict)}
    return wanted_uids <= uids and _normalised(existing.get("spec")) == _normalised(desired["spec"])


def _terminating(namespace: Obj) -> bool:
    return bool(meta(namespace).get("deletionTimestamp")) or (namespace.get("status") or {}).get("phase") == (
        "Terminating"
    )


def plan_namespace(
    namespace: Mapping[str, Any],
    snapshot: ClusterSnapshot,
    ctx: AuditContext,
    findings: Sequence[Finding] | None = None,
) -> NamespacePlan:
    """What enforce mode would write for one namespace (nothing when already compliant), the findings
    about it, and which pods enforcing would likely break. Pure: the caller applies. `findings`, when
    given, are the current audit's (the operator keeps them incrementally); otherwise they are computed."""
    ns_obj = dict(namespace)
    name, uid = name_of(ns_obj), str(meta(ns_obj).get("uid") or "")
    now = ctx.now
    audited = run_audit(snapshot, ctx) if findings is None else findings
    findings = [f for f in audited if name in (f.namespace, f.object.namespace)]
    exempt = namespace_is_exempt(ns_obj, ctx, now)
    policies = policies_in(snapshot, ctx, name)
    ours = {name_of(p): p for p in policies if is_managed(p) and name_of(p) in MANAGED_NAMES}
    if _terminating(ns_obj):
        return NamespacePlan(name, exempt, [], findings, [])

    others = [p for p in policies if name_of(p) not in ours]
    want_sa = not namespace_is_exempt(ns_obj, ctx, now, "AH-SA-001")
    want_ingress = not namespace_is_exempt(ns_obj, ctx, now, "AH-NET-001") and not any(
        is_default_deny(p, "Ingress") for p in others
    )
    want_egress = not namespace_is_exempt(ns_obj, ctx, now, "AH-NET-002") and not any(
        is_default_deny(p, "Egress") for p in others
    )
    desired = render_namespace_controls(
        name,
        uid,
        ctx.dns_namespace,
        dict(ctx.dns_pod_labels),
        ingress=want_ingress,
        egress=want_egress,
        dns_excluded=dns_opt_outs(snapshot, ctx, name),
    )
    conflicting = {name_of(p) for p in control_conflicts(snapshot, ctx, name)}
    apply = [
        d
        for d in desired
        if d["metadata"]["name"] not in conflicting
        and not (d["metadata"]["name"] in ours and _up_to_date(ours[d["metadata"]["name"]], d))
    ]
    desired_names = {d["metadata"]["name"] for d in desired}
    prune = [
        ObjectRef(kind="NetworkPolicy", name=n, namespace=name, api_version="networking.k8s.io/v1")
        for n in sorted(ours)
        if n not in desired_names
    ]
    default_sa = service_account_of(snapshot, ctx, name, "default")
    fix_sa = want_sa and (default_sa is None or default_sa.get("automountServiceAccountToken") is not False)
    if fix_sa:
        apply.insert(0, render_default_sa_patch(name))

    new_ingress = any("Ingress" in d["spec"]["policyTypes"] for d in apply if d["kind"] == "NetworkPolicy")
    new_egress = any("Egress" in d["spec"]["policyTypes"] for d in apply if d["kind"] == "NetworkPolicy")
    forecast = forecast_breakage(snapshot, ctx, name, token_off=fix_sa, ingress=new_ingress, egress=new_egress)
    return NamespacePlan(name, exempt, apply, findings, forecast, prune)


def forecast_breakage(
    snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, *, token_off: bool, ingress: bool, egress: bool
) -> list[BreakageForecast]:
    """Pods that would likely break if the default SA's automount were turned off (token_off) and
    default deny were added for ingress/egress (with the DNS allow to the cluster DNS)."""
    policies = policies_in(snapshot, ctx, namespace)
    forecast: list[BreakageForecast] = []
    for workload in workloads_of(snapshot, ctx, namespace):
        sa_name = workload.service_account
        mounted = token_mounted(workload, service_account_of(snapshot, ctx, namespace, sa_name))
        bindings = service_account_bindings(snapshot, ctx, namespace, sa_name) if mounted else []
        via = ", ".join(sorted({f"{b.ref.kind}/{b.ref.name}" for b in bindings}))
        impacts: list[tuple[Impact, str]] = []
        pod_keeps_token = workload.spec.get("automountServiceAccountToken") is True
        if token_off and sa_name == "default" and mounted and bindings and not pod_keeps_token:
            impacts.append(("loses-token", f"runs as default, whose token grants permissions via {via}"))
        if not workload.host_network:  # NetworkPolicies do not apply to host-network pods
            if ingress and not isolated(policies, workload.labels, "Ingress") and workload.container_ports():
                ports = ", ".join(workload.container_ports())
                impacts.append(("loses-ingress", f"declares ports {ports} and no NetworkPolicy allows ingress to it"))
            if egress and not isolated(policies, workload.labels, "Egress"):
                dns_policy = str(workload.spec.get("dnsPolicy") or "ClusterFirst")
                if dns_policy in ("Default", "None"):
                    impacts.append(("loses-dns", f"dnsPolicy {dns_policy} resolves outside the cluster DNS"))
                if mounted and bindings:
                    impacts.append(("loses-api-egress", f"calls the API with permissions via {via}"))
        pod = f"{workload.ref.kind}/{workload.ref.name}"
        forecast.extend(BreakageForecast(namespace, pod, sa_name, impact, reason) for impact, reason in impacts)
    return forecast


# --- summary -----------------------------------------------------------------------------------------


def namespace_summary(plan: NamespacePlan, controls: Mapping[tuple[str, str], bool]) -> dict[str, str]:
    """The annotation written back on the Namespace (format documented in docs/rules.md): compact,
    key-sorted JSON without timestamps, so an unchanged namespace produces an identical value."""
    own = {
        control: controls[(plan.namespace, control)] for control in CONTROLS if (plan.namespace, control) in controls
    }
    open_findings = [f for f in plan.findings if not f.exempted]
    violations = {severity.value: 0 for severity in Severity}
    for finding in open_findings:
        violations[finding.severity.value] += 1
    summary: dict[str, Any] = {
        "v": SUMMARY_VERSION,
        "exempt": plan.exempt,
        "controls": own,
        "violations": violations,
        "exempted": len(plan.findings) - len(open_findings),
        "pending": len(plan.apply) + len(plan.prune),
        "forecast": len(plan.forecast),
    }
    if own:
        base = 100 * sum(own.values()) // len(own)
        penalty = sum(SCORE_PENALTY[f.severity] for f in open_findings)
        summary["score"] = max(0, base - penalty)
    return {SUMMARY_ANNOTATION: json.dumps(summary, sort_keys=True, separators=(",", ":"))}
