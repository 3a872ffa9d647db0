"""Workloads: the snapshot's pod producers (a Deployment, CronJob, ... or a pod whose
controller is not in the snapshot), token-mount semantics, and the per-audit hygiene index (namespaces,
ServiceAccounts, NetworkPolicies and workloads by namespace/name) the rules and the namespace plan look up."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, labels_of, meta, name_of, namespace_of
from access_hygiene.models.findings import ObjectRef

_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_FINISHED_PHASES = ("Succeeded", "Failed")


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
