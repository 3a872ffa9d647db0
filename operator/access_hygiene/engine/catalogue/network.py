"""Network rules AH-NET-001..005: default deny per namespace, unselected pods, allow-all policies.

Namespaces exempted by the operator's configuration are skipped. AH-NET-001/002 judge Namespace
objects present in the snapshot (a manifest scan without them cannot tell what the cluster has).
"""

from collections.abc import Iterator
from typing import Any, Literal

from access_hygiene.engine.catalogue.registry import rule, severity_for
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import exempt_by_config
from access_hygiene.engine.ground.network_policies import is_default_deny, policies_in, policy_selects, policy_types
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, name_of, namespace_of
from access_hygiene.engine.ground.workloads import workloads_of
from access_hygiene.models.findings import Finding, ObjectRef, Severity

ANYWHERE = ("0.0.0.0/0", "::/0")


def _namespace_findings(
    snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str, direction: Literal["Ingress", "Egress"]
) -> Iterator[Finding]:
    for ns in snapshot.namespaces:
        name = name_of(ns)
        if exempt_by_config(snapshot, ctx, name):
            continue
        if not any(is_default_deny(p, direction) for p in policies_in(snapshot, ctx, name)):
            yield Finding(
                rule_id=rule_id,
                severity=severity_for(rule_id, name, ctx),
                namespace=name,
                object=ObjectRef(kind="Namespace", name=name, api_version="v1"),
                message=f"Namespace {name} has no default-deny {direction.lower()} NetworkPolicy "
                f"(podSelector {{}}, policyTypes [{direction}], no {direction.lower()} rules)",
            )


@rule("AH-NET-001", Severity.MEDIUM, "Namespace without default-deny ingress")
def no_default_deny_ingress(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """No NetworkPolicy selects every pod of the namespace for Ingress while allowing nothing: any
    pod in the cluster can reach any pod here unless each app is covered individually."""
    yield from _namespace_findings(snapshot, ctx, "AH-NET-001", "Ingress")


@rule("AH-NET-002", Severity.MEDIUM, "Namespace without default-deny egress")
def no_default_deny_egress(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """No NetworkPolicy selects every pod of the namespace for Egress while allowing nothing: a
    compromised pod can reach anything, including the API server and cloud metadata endpoints.
    (DNS is kept working by the operator's allow-dns policy; whether DNS is reachable is the
    dns-egress-allowed control, not this rule.)"""
    yield from _namespace_findings(snapshot, ctx, "AH-NET-002", "Egress")


def _policy_ref(policy: Obj) -> ObjectRef:
    return ObjectRef(
        kind="NetworkPolicy", name=name_of(policy), namespace=namespace_of(policy), api_version="networking.k8s.io/v1"
    )


def _governed_policies(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Obj]:
    for policy in snapshot.network_policies:
        if not exempt_by_config(snapshot, ctx, namespace_of(policy)):
            yield policy


def _reaches_anywhere(peers: Any) -> bool:
    """No peers (everyone), or an ipBlock covering every address."""
    if not peers:
        return True
    for peer in peers:
        block = (peer or {}).get("ipBlock") if isinstance(peer, dict) else None
        if isinstance(block, dict) and block.get("cidr") in ANYWHERE:
            return True
    return False


def _ports(rule_: Obj) -> str:
    ports = [p for p in rule_.get("ports") or [] if isinstance(p, dict)]
    if not ports:
        return "all ports"
    return ", ".join(f"{p.get('port', 'all')}/{p.get('protocol') or 'TCP'}" for p in ports)


@rule("AH-NET-003", Severity.MEDIUM, "NetworkPolicy allows all ingress")
def allow_all_ingress(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """An ingress rule with no `from` (or an ipBlock of 0.0.0.0/0 or ::/0) and no port restriction:
    the selected pods accept traffic from anywhere, which cancels any default deny for them."""
    for policy in _governed_policies(snapshot, ctx):
        if "Ingress" not in policy_types(policy):
            continue
        for rule_ in (policy.get("spec") or {}).get("ingress") or []:
            rule_ = rule_ if isinstance(rule_, dict) else {}
            if _reaches_anywhere(rule_.get("from")) and not rule_.get("ports"):
                ref = _policy_ref(policy)
                yield Finding(
                    rule_id="AH-NET-003",
                    severity=severity_for("AH-NET-003", ref.namespace, ctx),
                    namespace=ref.namespace,
                    object=ref,
                    message=f"NetworkPolicy {ref.name} allows ingress from anywhere on all ports",
                )
                break


@rule("AH-NET-004", Severity.LOW, "Pods not selected by any NetworkPolicy")
def unselected_pods(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A workload's pods are selected by no NetworkPolicy of their namespace (ingress or egress): all
    traffic to and from them is allowed. Host-network pods are skipped (policies do not apply)."""
    for workload in workloads_of(snapshot, ctx):
        if workload.host_network or exempt_by_config(snapshot, ctx, workload.namespace):
            continue
        policies = policies_in(snapshot, ctx, workload.namespace)
        if not any(policy_selects(policy, workload.labels) for policy in policies):
            yield Finding(
                rule_id="AH-NET-004",
                severity=severity_for("AH-NET-004", workload.namespace, ctx),
                namespace=workload.namespace,
                object=workload.ref,
                message=f"{workload.describe()} is selected by no NetworkPolicy: all traffic allowed",
            )


@rule("AH-NET-005", Severity.MEDIUM, "NetworkPolicy allows egress to anywhere")
def egress_anywhere(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """An egress rule with no `to` or with an ipBlock of 0.0.0.0/0 or ::/0: the selected pods may
    connect to any address (on the listed ports), including the internet and metadata endpoints."""
    for policy in _governed_policies(snapshot, ctx):
        if "Egress" not in policy_types(policy):
            continue
        for rule_ in (policy.get("spec") or {}).get("egress") or []:
            rule_ = rule_ if isinstance(rule_, dict) else {}
            if _reaches_anywhere(rule_.get("to")):
                ref = _policy_ref(policy)
                yield Finding(
                    rule_id="AH-NET-005",
                    severity=severity_for("AH-NET-005", ref.namespace, ctx),
                    namespace=ref.namespace,
                    object=ref,
                    message=f"NetworkPolicy {ref.name} allows egress to any address on {_ports(rule_)}",
                )
                break
