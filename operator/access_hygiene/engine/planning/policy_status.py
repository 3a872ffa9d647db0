"""Pure construction of AccessPolicy status: conditions keep lastTransitionTime unless status flips; what a
policy declares that its objects do not deliver (the Degraded condition)."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.network_policies import (
    dns_namespace_labels,
    egress_allows_address,
    policy_allows_dns,
    policy_selects,
)
from access_hygiene.engine.ground.snapshot import Obj, name_of
from access_hygiene.models.findings import Finding
from access_hygiene.models.policy import ResolvedPolicy
from access_hygiene.models.status import AccessPolicyStatus
from access_hygiene.render.namespace import DNS_ALLOW_NAME
from access_hygiene.render.policy import generated_name


def status_to_wire(status: AccessPolicyStatus) -> dict[str, Any]:
    # Unset optional fields (unusedRules, owned by the continuous-mode writer) stay out of the patch.
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing desired would change anything (kopf bookkeeping keys are ignored)."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())


def count_policy_findings(findings: Iterable[Finding], namespace: str, service_account: str) -> int:
    """Non-exempt findings about the policy's ServiceAccount (the Violations printer column)."""
    return sum(
        1
        for finding in findings
        if not finding.exempted
        and (
            (
                finding.subject is not None
                and finding.subject.kind == "ServiceAccount"
                and (finding.subject.namespace, finding.subject.name) == (namespace, service_account)
            )
            or (
                finding.object.kind == "ServiceAccount"
                and (finding.namespace, finding.object.name) == (namespace, service_account)
            )
        )
    )


def api_server_degradation(
    policy: ResolvedPolicy, desired: Sequence[Mapping[str, Any]], api_server_endpoints: Sequence[tuple[str, int]]
) -> tuple[str, str] | None:
    """(reason, message) when the policy asks for API server egress (network.kubeAPIServer) and the rendered
    NetworkPolicy does not allow every API server address; decided from the rendered egress rules, so an
    unrelated ipBlock (a database subnet) does not count."""
    network = policy.spec.network
    if network is None or not network.kube_api_server:
        return None
    if not api_server_endpoints:
        return (
            "APIServerEndpointsUnknown",
            "kubeAPIServer egress requested but the API server endpoints could not be discovered "
            "(no EndpointSlice of default/kubernetes): no egress to the API server is rendered",
        )
    rendered = [m for m in desired if m.get("kind") == "NetworkPolicy"]
    missing = [
        f"{ip}:{port}"
        for ip, port in api_server_endpoints
        if not any(egress_allows_address(dict(m), ip, port) for m in rendered)
    ]
    if missing:
        return (
            "APIServerEgressMissing",
            f"kubeAPIServer egress requested but the rendered NetworkPolicy does not allow {', '.join(missing)}",
        )
    return None


def dns_degradation(
    policy: ResolvedPolicy,
    desired: Sequence[Mapping[str, Any]],
    namespace_policies: Sequence[Obj],
    ctx: AuditContext,
    dns_namespace: Obj | None = None,
) -> tuple[str, str] | None:
    """(reason, message) when the policy turns DNS off (network.dns: false) and a NetworkPolicy in its namespace,
    its own rendered one included, still allows the app's pods DNS egress (NetworkPolicies add up: one allow is
    enough)."""
    network = policy.spec.network
    if network is None or network.dns:
        return None
    own = generated_name(policy)
    rendered = [dict(m) for m in desired if m.get("kind") == "NetworkPolicy"]
    dns_ns_labels = dns_namespace_labels(dns_namespace, ctx)
    allowing = sorted(
        name_of(p)
        for p in [*rendered, *(p for p in namespace_policies if name_of(p) != own)]
        if policy_selects(p, policy.pod_labels) and policy_allows_dns(p, ctx, dns_ns_labels)
    )
    if not allowing:
        return None
    message = f"network.dns is false but NetworkPolicy {', '.join(allowing)} allows these pods DNS egress"
    if own in allowing:
        message += f" ({own} is this policy's own: its egress rules reach the cluster DNS)"
    elif DNS_ALLOW_NAME in allowing:
        count = len(policy.pod_labels)
        why = "" if count == 1 else f"; this policy's podSelector has {count} labels, so it cannot"
        message += (
            f" ({DNS_ALLOW_NAME} leaves out the pods of a policy that turns DNS off once that policy's NetworkPolicy "
            f"is in place, and only when one label selects them{why})"
        )
    return ("DNSStillAllowed", message)


def refusal_news(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a refusal (Ready=False) the previous status did not already say for the same
    generation: what one Warning Event on the AccessPolicy announces. None when nothing new was refused."""

    def ready(status: Mapping[str, Any] | None) -> tuple[Any, ...] | None:
        found = next((c for c in (status or {}).get("conditions") or [] if c.get("type") == "Ready"), None)
        if found is None:
            return None
        return (found.get("status"), found.get("reason"), found.get("message"), found.get("observedGeneration"))

    now = ready(current)
    if now is None or now[0] != "False" or ready(previous) == now:
        return None
    return str(now[1]), str(now[2])
