"""The namespace hygiene controls (default SA automount off, default deny ingress/egress, DNS
egress, no pods on the default SA), whether each is in place, and the objects the operator names but does not own."""

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import namespace_is_exempt
from access_hygiene.engine.ground.network_policies import dns_allowed, is_default_deny, policies_in
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, is_managed, name_of
from access_hygiene.engine.ground.workloads import service_account_of, workloads_of
from access_hygiene.render.namespace import DEFAULT_DENY_NAME, DNS_ALLOW_NAME

CONTROLS = (
    "default-sa-automount-off",
    "default-deny-ingress",
    "default-deny-egress",
    "dns-egress-allowed",
    "no-pods-on-default-sa",
)
MANAGED_NAMES = (DEFAULT_DENY_NAME, DNS_ALLOW_NAME)


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
