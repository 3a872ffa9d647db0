"""AH-SA-011: attack paths from a workload to a takeover of the cluster or its namespace.

A workload whose pods mount an API token for a ServiceAccount that can take over the cluster or a namespace
is where an attacker who gets code execution in one container ends up: the finding sits on the workload and
names the whole path, "Deployment X -> ServiceAccount Y -> ClusterRoleBinding Z -> capability", because that
is what a person triaging needs first (the CLI sorts these findings before all others).

Takeover capabilities: cluster-admin equivalence (`*/*/*`, cluster-wide or in a namespace), escalate, bind,
impersonate, reading Secrets cluster-wide, creating pods (or pod templates) cluster-wide or in a privileged
namespace, minting tokens cluster-wide, nodes/proxy, admission webhook writes. Bindings reach the
ServiceAccount directly or through its groups (system:serviceaccounts[:NS], system:authenticated).
"""

from collections.abc import Iterator

from access_hygiene.engine.catalogue.registry import rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import exempt_by_config
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.ground.workloads import service_account_of, token_mounted, workloads_of
from access_hygiene.engine.rbac.capabilities import (
    BIND,
    CREATE_PODS,
    CREATE_WORKLOADS,
    ESCALATE,
    IMPERSONATE,
    NODES_PROXY,
    SECRETS_READ,
    TOKEN_CREATE,
    WEBHOOK_WRITE,
    grant_text,
    rules_grant,
)
from access_hygiene.engine.rbac.permissions import Binding, is_excluded, permission_index
from access_hygiene.models.findings import Finding, Severity, Subject


def takeover(binding: Binding, ctx: AuditContext) -> tuple[int, str] | None:
    """The most severe takeover capability the binding confers (rank, lower is worse; description with
    its scope), or None."""
    rules = binding.rules
    cluster_wide = not binding.namespace
    where = "cluster-wide" if cluster_wide else f"in namespace {binding.namespace}"
    if any(r.is_superuser for r in rules):
        return (0, "cluster-admin (*/*/*)") if cluster_wide else (1, f"*/*/* {where} (namespace takeover)")
    for pattern, include_named in ((IMPERSONATE, True), (ESCALATE, False), (BIND, False)):
        if rules_grant(rules, pattern, include_named=include_named):
            return (2 if cluster_wide else 3), f"{grant_text(rules, pattern, include_named=include_named)} {where}"
    privileged = cluster_wide or binding.namespace in ctx.privileged_namespaces
    if privileged and rules_grant(rules, CREATE_PODS):
        return 4, f"create pods {where}"
    if privileged and rules_grant(rules, CREATE_WORKLOADS):
        return 4, f"{grant_text(rules, CREATE_WORKLOADS)} (pod-template control: runs pods) {where}"
    if cluster_wide:
        for pattern in (NODES_PROXY, WEBHOOK_WRITE, SECRETS_READ, TOKEN_CREATE):
            if rules_grant(rules, pattern):
                return 4, f"{grant_text(rules, pattern)} cluster-wide"
    return None


@rule("AH-SA-011", Severity.CRITICAL, "Workload's token opens an attack path to cluster or namespace takeover")
def attack_paths(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A workload mounts an API token for a ServiceAccount that can take over the cluster or a namespace
    (cluster-admin equivalent, impersonate/escalate/bind, read all Secrets, create pods cluster-wide or in a
    privileged namespace, mint tokens, nodes/proxy, admission webhooks). One finding per workload naming the
    path "Deployment X -> ServiceAccount Y -> ClusterRoleBinding Z -> capability"; code execution in any of
    its containers is a takeover. Sorted first in CLI output."""
    index = permission_index(snapshot, ctx)
    memo: dict[tuple[int, str], tuple[int, str] | None] = {}
    exempt: dict[str, bool] = {}
    for workload in workloads_of(snapshot, ctx):
        namespace, sa_name = workload.namespace, workload.service_account
        if namespace not in exempt:
            exempt[namespace] = exempt_by_config(snapshot, ctx, namespace)
        subject = Subject(kind="ServiceAccount", namespace=namespace, name=sa_name)
        if exempt[namespace] or is_excluded(subject, ctx):
            continue
        if not token_mounted(workload, service_account_of(snapshot, ctx, namespace, sa_name)):
            continue
        paths: list[tuple[int, Binding, Subject, str]] = []
        for matched, binding in index.bindings_for(subject):
            key = (id(binding.rules), binding.namespace)
            if key not in memo:
                memo[key] = takeover(binding, ctx)
            found = memo[key]
            if found is not None:
                paths.append((found[0], binding, matched, found[1]))
        if not paths:
            continue
        paths.sort(key=lambda p: (p[0], p[1].ref.kind, p[1].ref.namespace, p[1].ref.name))
        _, binding, matched, capability = paths[0]
        via = "" if matched.kind == "ServiceAccount" else f" (as {matched.kind} {matched.name})"
        more = f" (+{len(paths) - 1} more path{'s' if len(paths) > 2 else ''})" if len(paths) > 1 else ""
        yield Finding(
            rule_id="AH-SA-011",
            severity=Severity.CRITICAL,
            namespace=namespace,
            object=workload.ref,
            subject=subject,
            message=f"{workload.ref.kind} {workload.ref.name} -> ServiceAccount {sa_name}{via} -> "
            f"{binding.ref.kind} {binding.ref.name} ({binding.role_ref.kind}/{binding.role_ref.name}) -> "
            f"{capability}{more}",
        )
