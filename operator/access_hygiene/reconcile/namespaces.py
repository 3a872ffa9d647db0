"""Namespace hygiene: what pods run as and can reach, which controls are in place, and what enforce
mode would change (plan + breakage forecast + the summary annotation written back).

Shared with the hygiene rules (rules/serviceaccounts.py, network.py, pods.py): the "workload"
view of the snapshot (one entry per pod-producing unit), token-mount and NetworkPolicy semantics.
"""

import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from access_hygiene.reconcile.audit import run_audit
from access_hygiene.reconcile.exemptions import namespace_exempt_by_config, namespace_is_exempt
from access_hygiene.reconcile.permissions import Binding, permission_index, selector_matches
from access_hygiene.reconcile.rules import RULES, AuditContext
from access_hygiene.reconcile.snapshot import ClusterSnapshot, Obj, labels_of, meta, name_of, namespace_of
from access_hygiene.render.namespace import (
    DEFAULT_DENY_NAME,
    DNS_ALLOW_NAME,
    NAMESPACE_NAME_LABEL,
    render_default_sa_patch,
    render_namespace_controls,
)

SUMMARY_ANNOTATION = "accesshygiene.io/hygiene-summary"
SUMMARY_VERSION = 1
CONTROLS = (
    "default-sa-automount-off",
    "default-deny-ingress",
    "default-deny-egress",
    "dns-egress-allowed",
    "no-pods-on-default-sa",
)
MANAGED_NAMES = (DEFAULT_DENY_NAME, DNS_ALLOW_NAME)
# Score penalty per non-exempted violation, by severity (see docs/rules.md, "Hygiene summary").
SCORE_PENALTY = {Severity.CRITICAL: 10, Severity.HIGH: 5, Severity.MEDIUM: 2, Severity.LOW: 0}
Impact = Literal["loses-token", "loses-dns", "loses-api-egress", "loses-ingress"]

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_FINISHED_PHASES = ("Succeeded", "Failed")


def exempt_by_config(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> bool:
    """Namespaces the operator's configuration exempts: the hygiene rules skip them entirely."""
    index = hygiene_index(snapshot, ctx)
    if namespace not in index.config_exempt:
        ns_obj = index.namespaces.get(namespace, {"metadata": {"name": namespace}})
        index.config_exempt[namespace] = namespace_exempt_by_config(ns_obj, ctx)
    return index.config_exempt[namespace]


def severity_for(rule_id: str, namespace: str, ctx: AuditContext) -> Severity:
    """The rule's severity, one step higher in privileged namespaces."""
    base = RULES[rule_id].severity
    return base.raised() if namespace in ctx.privileged_namespaces else base


# --- workloads: one entry per pod-producing unit -----------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """A pod template (Deployment, CronJob, ...) or a pod whose controller is not in the snapshot."""

    ref: ObjectRef
    namespace: str
    labels: dict[str, str]  # the pods' labels
    spec: Obj  # the pod spec
    live: bool  # a Pod as admitted by the API server (its token volume, if any, is already there)

    @property
    def service_account(self) -> str:
        return str(self.spec.get("serviceAccountName") or self.spec.get("serviceAccount") or "default")

    @property
    def host_network(self) -> bool:
        return self.spec.get("hostNetwork") is True

    def containers(self) -> Iterator[Obj]:
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for container in self.spec.get(key) or []:
                if isinstance(container, dict):
                    yield container

    def container_ports(self) -> list[str]:
        ports = []
        for container in self.containers():
            for port in container.get("ports") or []:
                if isinstance(port, dict) and "containerPort" in port:
                    ports.append(f"{port['containerPort']}/{port.get('protocol') or 'TCP'}")
        return sorted(set(ports))

    def describe(self) -> str:
        return f"{self.ref.kind} {self.ref.name}"


def _dig(obj: Obj, path: tuple[str, ...]) -> Obj:
    current: Any = obj
    for key in path:
        current = current.get(key) if isinstance(current, dict) else None
    return current if isinstance(current, dict) else {}


def _controller_key(obj: Obj) -> tuple[str, str, str] | None:
    refs = [r for r in meta(obj).get("ownerReferences") or [] if isinstance(r, dict)]
    owner = next((r for r in refs if r.get("controller")), None)
    return (str(owner.get("kind", "")), namespace_of(obj), str(owner.get("name", ""))) if owner else None


def _ref(obj: Obj, kind: str) -> ObjectRef:
    return ObjectRef(
        kind=kind, name=name_of(obj), namespace=namespace_of(obj), api_version=str(obj.get("apiVersion") or "")
    )


@dataclass
class HygieneIndex:
    """The snapshot's objects by namespace/name, built once per audit (the rules look up per workload)."""

    namespaces: dict[str, Obj]
    service_accounts: dict[tuple[str, str], Obj]
    policies: dict[str, list[Obj]]
    workloads: list[Workload]
    workloads_by_namespace: dict[str, list[Workload]]
    config_exempt: dict[str, bool] = field(default_factory=dict)


def _fingerprint(snapshot: ClusterSnapshot) -> tuple[int, ...]:
    s = snapshot
    return (len(s.namespaces), len(s.service_accounts), len(s.pods), len(s.network_policies), len(s.workloads))


def hygiene_index(snapshot: ClusterSnapshot, ctx: AuditContext) -> HygieneIndex:
    """Cached in ctx.cache["hygiene"] for this snapshot (rebuilt if objects were added meanwhile)."""
    cached = ctx.cache.get("hygiene")
    if isinstance(cached, tuple) and cached[0] == _fingerprint(snapshot) and cached[1] is snapshot:
        index: HygieneIndex = cached[2]
        return index
    policies: dict[str, list[Obj]] = {}
    for policy in snapshot.network_policies:
        policies.setdefault(namespace_of(policy), []).append(policy)
    workloads = _workloads(snapshot)
    by_namespace: dict[str, list[Workload]] = {}
    for workload in workloads:
        by_namespace.setdefault(workload.namespace, []).append(workload)
    index = HygieneIndex(
        namespaces={name_of(ns): ns for ns in snapshot.namespaces},
        service_accounts={(namespace_of(sa), name_of(sa)): sa for sa in snapshot.service_accounts},
        policies=policies,
        workloads=workloads,
        workloads_by_namespace=by_namespace,
    )
    ctx.cache["hygiene"] = (_fingerprint(snapshot), snapshot, index)
    return index


def workloads_of(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str | None = None) -> list[Workload]:
    """Top-most known pod producers: a Deployment, not its ReplicaSets and pods; a pod only when its
    controller is not in the snapshot. Finished pods are left out (they hold no live token)."""
    index = hygiene_index(snapshot, ctx)
    return list(index.workloads if namespace is None else index.workloads_by_namespace.get(namespace, []))


def _workloads(snapshot: ClusterSnapshot) -> list[Workload]:
    known = {(str(o.get("kind", "")), namespace_of(o), name_of(o)) for o in snapshot.workloads}
    result: list[Workload] = []
    for obj in snapshot.workloads:
        kind = str(obj.get("kind", ""))
        if kind not in _TEMPLATE_PATHS:
            continue
        if _controller_key(obj) in known:
            continue
        template = _dig(obj, _TEMPLATE_PATHS[kind])
        result.append(
            Workload(_ref(obj, kind), namespace_of(obj), labels_of(template), _dig(template, ("spec",)), live=False)
        )
    for pod in snapshot.pods:
        if _controller_key(pod) in known or (pod.get("status") or {}).get("phase") in _FINISHED_PHASES:
            continue
        live = bool(meta(pod).get("uid"))
        result.append(Workload(_ref(pod, "Pod"), namespace_of(pod), labels_of(pod), _dig(pod, ("spec",)), live))
    return sorted(result, key=lambda w: (w.namespace, w.ref.kind, w.ref.name))


def service_account_of(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, name: str) -> Obj | None:
    return hygiene_index(snapshot, ctx).service_accounts.get((namespace, name))


def _has_api_token_volume(spec: Obj) -> bool:
    """The projected volume the ServiceAccount admission plugin injects (kube-api-access-*)."""
    for volume in spec.get("volumes") or []:
        sources = ((volume or {}).get("projected") or {}).get("sources") or []
        for source in sources:
            token = (source or {}).get("serviceAccountToken")
            if isinstance(token, dict) and not token.get("audience"):
                return True
    return False


def token_mounted(workload: Workload, service_account: Obj | None) -> bool:
    """Does the pod get an API token? Admitted pods: the injected volume says. Templates: the pod's
    automountServiceAccountToken, else the ServiceAccount's, else true (the Kubernetes default)."""
    if workload.live:
        return _has_api_token_volume(workload.spec)
    pod_setting = workload.spec.get("automountServiceAccountToken")
    if isinstance(pod_setting, bool):
        return pod_setting
    sa_setting = (service_account or {}).get("automountServiceAccountToken")
    return sa_setting if isinstance(sa_setting, bool) else True


def service_account_bindings(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, name: str) -> list[Binding]:
    """Bindings that give the ServiceAccount permissions (directly or via its groups), built-in
    bootstrap bindings (discovery, basic-user, ...) left out."""
    subject = Subject(kind="ServiceAccount", name=name, namespace=namespace)
    return [b for _, b in permission_index(snapshot, ctx).bindings_for(subject) if not b.bootstrap]


# --- NetworkPolicy semantics -------------------------------------------------------------------------


def policy_types(policy: Obj) -> list[str]:
    """spec.policyTypes, or its API default: Ingress, plus Egress when egress rules are present."""
    spec = policy.get("spec") or {}
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return [str(t) for t in declared]
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _selects_all(selector: Any) -> bool:
    return not isinstance(selector, dict) or not (selector.get("matchLabels") or selector.get("matchExpressions"))


def policy_selects(policy: Obj, pod_labels: Mapping[str, str]) -> bool:
    selector = (policy.get("spec") or {}).get("podSelector")
    return selector_matches(selector if isinstance(selector, dict) else {}, pod_labels)


def is_default_deny(policy: Obj, direction: Literal["Ingress", "Egress"]) -> bool:
    """Selects every pod, isolates it for the direction and allows nothing in that direction."""
    spec = policy.get("spec") or {}
    rules = spec.get("ingress" if direction == "Ingress" else "egress")
    return _selects_all(spec.get("podSelector")) and direction in policy_types(policy) and not rules


def policies_in(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> list[Obj]:
    return list(hygiene_index(snapshot, ctx).policies.get(namespace, []))


def is_managed(obj: Obj) -> bool:
    return labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def isolated(policies: list[Obj], pod_labels: Mapping[str, str], direction: str) -> bool:
    return any(direction in policy_types(p) and policy_selects(p, pod_labels) for p in policies)


def _port_allows_dns(port: Any) -> bool:
    if not isinstance(port, dict):
        return False
    if str(port.get("protocol") or "TCP") != "UDP":
        return False
    number = port.get("port")
    if number is None:  # all ports of that protocol
        return True
    if isinstance(number, str) and not number.isdigit():
        return number in ("dns", "domain")  # CoreDNS / kube-dns name their container ports so
    end = port.get("endPort")
    return int(number) == 53 or (isinstance(end, int) and int(number) <= 53 <= end)


def _peer_reaches_dns(peer: Any, policy_namespace: str, ctx: AuditContext, dns_ns_labels: Mapping[str, str]) -> bool:
    if not isinstance(peer, dict):
        return False
    if "ipBlock" in peer:  # addresses are unknown here; only "everything" surely includes the DNS pods
        block = peer.get("ipBlock") or {}
        return block.get("cidr") in ("0.0.0.0/0", "::/0") and not block.get("except")
    pod_selector = peer.get("podSelector")
    pods_match = pod_selector is None or selector_matches(pod_selector or {}, dict(ctx.dns_pod_labels))
    if "namespaceSelector" in peer:
        return pods_match and selector_matches(peer.get("namespaceSelector") or {}, dns_ns_labels)
    return pods_match and policy_namespace == ctx.dns_namespace


def dns_namespace_labels(dns_namespace: Obj | None, ctx: AuditContext) -> dict[str, str]:
    """Labels of the cluster DNS namespace (kubernetes.io/metadata.name even when the object is not known)."""
    return {NAMESPACE_NAME_LABEL: ctx.dns_namespace, **(labels_of(dns_namespace) if dns_namespace else {})}


def policy_allows_dns(policy: Obj, ctx: AuditContext, dns_ns_labels: Mapping[str, str]) -> bool:
    """Does this one NetworkPolicy allow egress to the cluster DNS (UDP 53) for the pods it selects?"""
    if "Egress" not in policy_types(policy):
        return False
    for egress in (policy.get("spec") or {}).get("egress") or []:
        egress = egress if isinstance(egress, dict) else {}
        ports, peers = egress.get("ports") or [], egress.get("to") or []
        port_ok = not ports or any(_port_allows_dns(p) for p in ports)
        peer_ok = not peers or any(_peer_reaches_dns(p, namespace_of(policy), ctx, dns_ns_labels) for p in peers)
        if port_ok and peer_ok:
            return True
    return False


def dns_allowed(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str, pod_labels: Mapping[str, str]) -> bool:
    """Can a pod with these labels reach the cluster DNS (UDP 53)?"""
    policies = policies_in(snapshot, ctx, namespace)
    if not isolated(policies, pod_labels, "Egress"):
        return True
    dns_ns_labels = dns_namespace_labels(hygiene_index(snapshot, ctx).namespaces.get(ctx.dns_namespace), ctx)
    return any(policy_selects(p, pod_labels) and policy_allows_dns(p, ctx, dns_ns_labels) for p in policies)


def generated_by_policy(obj: Obj) -> bool:
    """An object the operator generated for an AccessPolicy (managed, and an AccessPolicy is its controller)."""
    refs = [r for r in meta(obj).get("ownerReferences") or [] if isinstance(r, dict)]
    return is_managed(obj) and any(
        r.get("kind") == "AccessPolicy" and str(r.get("apiVersion", "")).startswith(f"{API_GROUP}/") for r in refs
    )


def dns_opt_outs(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> list[dict[str, str]]:
    """Pod selectors (matchLabels) of the AccessPolicies here that turn DNS off (network.dns: false) and whose
    NetworkPolicy is in place: generated for a policy, isolating egress, allowing no DNS. Only one-label
    selectors: a label selector can leave out exactly the pods one label selects, not those a combination of
    labels selects (the policy's Degraded condition says so; see docs/rules.md, "Namespace enforcement")."""
    dns_ns_labels = dns_namespace_labels(hygiene_index(snapshot, ctx).namespaces.get(ctx.dns_namespace), ctx)
    found: dict[tuple[str, str], dict[str, str]] = {}
    for policy in policies_in(snapshot, ctx, namespace):
        if not generated_by_policy(policy) or "Egress" not in policy_types(policy):
            continue
        selector = (policy.get("spec") or {}).get("podSelector")
        selector = selector if isinstance(selector, dict) else {}
        labels = selector.get("matchLabels")
        if selector.get("matchExpressions") or not isinstance(labels, dict) or len(labels) != 1:
            continue
        if policy_allows_dns(policy, ctx, dns_ns_labels):
            continue
        ((key, value),) = labels.items()
        found[(str(key), str(value))] = {str(key): str(value)}
    return [found[k] for k in sorted(found)]


def _port_allows(port: Any, protocol: str, number: int) -> bool:
    if not isinstance(port, dict) or str(port.get("protocol") or "TCP") != protocol:
        return False
    value = port.get("port")
    if value is None:  # every port of the protocol
        return True
    if isinstance(value, str) and not value.isdigit():
        return False  # a named port is a container port of the peer pods, never one of an address outside
    end = port.get("endPort")
    return int(value) == number or (isinstance(end, int) and int(value) <= number <= end)


def _block_contains(peer: Any, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    block = peer.get("ipBlock") if isinstance(peer, dict) else None
    if not isinstance(block, dict):
        return False  # pod and namespace selectors select pods, not addresses outside the pod network
    try:
        if address not in ipaddress.ip_network(str(block.get("cidr")), strict=False):
            return False
        return not any(address in ipaddress.ip_network(str(e), strict=False) for e in block.get("except") or [])
    except ValueError:
        return False


def egress_allows_address(policy: Obj, ip: str, port: int, protocol: str = "TCP") -> bool:
    """Does this one NetworkPolicy's egress allow connections to ip:port (an address outside the pod network,
    such as the API server's)? Only rules without peers or with an ipBlock holding the address can."""
    if "Egress" not in policy_types(policy):
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for egress in (policy.get("spec") or {}).get("egress") or []:
        egress = egress if isinstance(egress, dict) else {}
        ports, peers = egress.get("ports") or [], egress.get("to") or []
        port_ok = not ports or any(_port_allows(p, protocol, port) for p in ports)
        peer_ok = not peers or any(_block_contains(p, address) for p in peers)
        if port_ok and peer_ok:
            return True
    return False


# --- controls ----------------------------------------------------------------------------------------


def _controls_of(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> dict[str, bool]:
    policies = policies_in(snapshot, ctx, namespace)
    default_sa = service_account_of(snapshot, ctx, namespace, "default")
    return {
        "default-sa-automount-off": default_sa is not None and default_sa.get("automountServiceAccountToken") is False,
        "default-deny-ingress": any(is_default_deny(p, "Ingress") for p in policies),
        "default-deny-egress": any(is_default_deny(p, "Egress") for p in policies),
        "dns-egress-allowed": dns_allowed(snapshot, ctx, namespace, {}),
        "no-pods-on-default-sa": all(w.service_account != "default" for w in workloads_of(snapshot, ctx, namespace)),
    }


def namespace_controls(
    snapshot: ClusterSnapshot, ctx: AuditContext, *, include_exempt: bool = False
) -> dict[tuple[str, str], bool]:
    """(namespace, control) -> in place, for every Namespace in the snapshot the operator governs
    (exempt namespaces only with include_exempt). Controls: see CONTROLS."""
    result: dict[tuple[str, str], bool] = {}
    for ns in snapshot.namespaces:
        name = name_of(ns)
        if not include_exempt and namespace_is_exempt(ns, ctx, ctx.now):
            continue
        for control, in_place in _controls_of(snapshot, ctx, name).items():
            result[(name, control)] = in_place
    return result


def control_conflicts(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> list[Obj]:
    """NetworkPolicies with one of our names that we do not own: we never overwrite them."""
    return [
        p for p in policies_in(snapshot, ctx, namespace) if name_of(p) in MANAGED_NAMES and not is_managed(p)
    ]  # fmt: skip


# --- plan and forecast -------------------------------------------------------------------------------


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
