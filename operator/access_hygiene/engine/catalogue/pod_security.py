"""Pod security rules AH-POD-001..003 (report only: the operator never changes workloads).

One finding per workload (a Deployment, CronJob, ... or a pod without a known controller), naming the
offending containers. Namespaces exempted by the operator's configuration are skipped.
"""

from collections.abc import Iterator

from access_hygiene.engine.catalogue.registry import rule, severity_for
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import exempt_by_config
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj
from access_hygiene.engine.ground.workloads import Workload, workloads_of
from access_hygiene.models.findings import Finding, Severity

HOST_NAMESPACES = (("hostNetwork", "network"), ("hostPID", "PID"), ("hostIPC", "IPC"))


def _governed(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Workload]:
    for workload in workloads_of(snapshot, ctx):
        if not exempt_by_config(snapshot, ctx, workload.namespace):
            yield workload


def _context(obj: Obj) -> Obj:
    value = obj.get("securityContext")
    return value if isinstance(value, dict) else {}


def _finding(rule_id: str, ctx: AuditContext, workload: Workload, message: str) -> Finding:
    return Finding(
        rule_id=rule_id,
        severity=severity_for(rule_id, workload.namespace, ctx),
        namespace=workload.namespace,
        object=workload.ref,
        message=message,
    )


@rule("AH-POD-001", Severity.HIGH, "Privileged container")
def privileged_containers(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A container runs with securityContext.privileged: true: it has every capability and the
    host's devices, so escaping to the node is trivial."""
    for workload in _governed(snapshot, ctx):
        names = [str(c.get("name")) for c in workload.containers() if _context(c).get("privileged") is True]
        if names:
            yield _finding("AH-POD-001", ctx, workload, f"{workload.describe()} runs privileged: {', '.join(names)}")


@rule("AH-POD-002", Severity.HIGH, "Pod shares host namespaces")
def host_namespaces(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """hostNetwork, hostPID or hostIPC: the pod sees the node's network stack, processes or IPC,
    and NetworkPolicies no longer apply to host-network pods."""
    for workload in _governed(snapshot, ctx):
        shared = [label for key, label in HOST_NAMESPACES if workload.spec.get(key) is True]
        if shared:
            yield _finding(
                "AH-POD-002", ctx, workload, f"{workload.describe()} shares the host's {', '.join(shared)} namespace(s)"
            )


def _root_problems(workload: Workload, container: Obj) -> list[str]:
    pod, own = _context(workload.spec), _context(container)
    # A container's null is no value (the API server drops it): the pod's value applies, as it does live.
    run_as_user = own.get("runAsUser") if own.get("runAsUser") is not None else pod.get("runAsUser")
    run_as_non_root = own.get("runAsNonRoot") if own.get("runAsNonRoot") is not None else pod.get("runAsNonRoot")
    problems = []
    if run_as_user == 0:
        problems.append("runAsUser 0")
    elif run_as_user is None and run_as_non_root is not True:
        problems.append("may run as root (no runAsNonRoot/runAsUser)")
    if own.get("privileged") is not True and own.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation not false")
    return problems


@rule("AH-POD-003", Severity.LOW, "Container may run as root or escalate privileges")
def root_or_escalation(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    """A container runs as UID 0, may run as root (neither runAsNonRoot: true nor a non-zero
    runAsUser), or does not set allowPrivilegeEscalation: false (restricted Pod Security requires
    both). Privileged containers are AH-POD-001's."""
    for workload in _governed(snapshot, ctx):
        details = []
        for container in workload.containers():
            problems = _root_problems(workload, container)
            if problems:
                details.append(f"{container.get('name')} ({', '.join(problems)})")
        if details:
            yield _finding("AH-POD-003", ctx, workload, f"{workload.describe()}: {'; '.join(details)}")
