"""A point-in-time view of the cluster objects the audit rules read.

Objects are plain dicts shaped like the API's JSON (camelCase), so the same snapshot can be
loaded from the live API (k8s/), from `kubectl get -o yaml` output or from manifest files (cli/).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from access_hygiene import API_GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE

Obj = dict[str, Any]

# kind -> snapshot attribute. Kinds not listed are ignored when loading.
KIND_FIELDS: dict[str, str] = {
    "Namespace": "namespaces",
    "ServiceAccount": "service_accounts",
    "Pod": "pods",
    "Role": "roles",
    "ClusterRole": "cluster_roles",
    "RoleBinding": "role_bindings",
    "ClusterRoleBinding": "cluster_role_bindings",
    "NetworkPolicy": "network_policies",
    "Secret": "secrets",
    "AccessPolicy": "access_policies",
    "Deployment": "workloads",
    "StatefulSet": "workloads",
    "DaemonSet": "workloads",
    "Job": "workloads",
    "CronJob": "workloads",
    "ReplicaSet": "workloads",
}
# Kinds without a namespace: the API server drops a metadata.namespace sent with them (Helm charts often set one).
CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding"})


@dataclass
class ClusterSnapshot:
    namespaces: list[Obj] = field(default_factory=list)
    service_accounts: list[Obj] = field(default_factory=list)
    pods: list[Obj] = field(default_factory=list)
    roles: list[Obj] = field(default_factory=list)
    cluster_roles: list[Obj] = field(default_factory=list)
    role_bindings: list[Obj] = field(default_factory=list)
    cluster_role_bindings: list[Obj] = field(default_factory=list)
    network_policies: list[Obj] = field(default_factory=list)
    secrets: list[Obj] = field(default_factory=list)  # metadata-only is enough; data is never read
    access_policies: list[Obj] = field(default_factory=list)
    workloads: list[Obj] = field(default_factory=list)

    def add(self, obj: Obj) -> bool:
        """Add one object by its kind; returns False for kinds the rules do not read. A cluster-scoped object
        is stored as the API server stores it: without metadata.namespace (a copy, the input is not changed)."""
        kind = str(obj.get("kind", ""))
        attr = KIND_FIELDS.get(kind)
        if attr is None:
            return False
        getattr(self, attr).append(cluster_scoped(obj) if kind in CLUSTER_SCOPED_KINDS else obj)
        return True

    @classmethod
    def from_objects(cls, objects: Iterable[Obj]) -> "ClusterSnapshot":
        snapshot = cls()
        for obj in iter_flattened(objects):
            snapshot.add(obj)
        return snapshot

    def namespace_names(self) -> list[str]:
        names = {name_of(ns) for ns in self.namespaces}
        for attr in (
            "service_accounts",
            "pods",
            "roles",
            "role_bindings",
            "network_policies",
            "access_policies",
        ):
            names.update(namespace_of(o) for o in getattr(self, attr))
        names.discard("")
        return sorted(names)


def iter_flattened(objects: Iterable[Obj | None]) -> Iterator[Obj]:
    """Yield objects, expanding `kind: List` / `*List` wrappers as `kubectl get -o yaml` prints them."""
    for obj in objects:
        if not isinstance(obj, dict):
            continue
        kind = str(obj.get("kind", ""))
        if kind == "List" or (kind.endswith("List") and "items" in obj):
            item_kind = kind[: -len("List")] if kind != "List" else ""
            for item in obj.get("items") or []:
                if isinstance(item, dict):
                    if item_kind and "kind" not in item:
                        item = {**item, "kind": item_kind}
                    yield from iter_flattened([item])
        else:
            yield obj


def cluster_scoped(obj: Obj) -> Obj:
    """A cluster-scoped object without metadata.namespace, as kube-apiserver stores it (the object itself
    when it has none, else a copy with a copied metadata)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or "namespace" not in metadata:
        return obj
    return {**obj, "metadata": {k: v for k, v in metadata.items() if k != "namespace"}}


def meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace") or "")


def labels_of(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("labels")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("annotations")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


# Fields no rule reads that can be large: dropping them keeps a watch-fed store small.
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_CONTAINER_FIELDS = ("name", "image", "securityContext")
_POD_SPEC_DROP = ("containers", "initContainers", "ephemeralContainers")


def _trim_pod_spec(spec: Obj) -> Obj:
    trimmed = {k: v for k, v in spec.items() if k not in _POD_SPEC_DROP}
    for key in _POD_SPEC_DROP:
        containers = spec.get(key)
        if isinstance(containers, list):
            trimmed[key] = [{f: c[f] for f in _CONTAINER_FIELDS if f in c} for c in containers if isinstance(c, dict)]
    return trimmed


def trim_object(obj: Obj) -> Obj:
    """The object without what the rules never read: managedFields, kubectl's last-applied copy,
    workload status, and container details other than name, image and securityContext."""
    metadata = dict(meta(obj))
    metadata.pop("managedFields", None)
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict) and _LAST_APPLIED in annotations:
        metadata["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    trimmed = {**obj, "metadata": metadata}
    kind = obj.get("kind")
    if kind == "Pod":
        spec = obj.get("spec")
        if isinstance(spec, dict):
            trimmed["spec"] = _trim_pod_spec(spec)
        phase = (obj.get("status") or {}).get("phase")
        trimmed["status"] = {"phase": phase} if phase else {}
    elif kind in WORKLOAD_KINDS:
        trimmed.pop("status", None)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            trimmed["spec"] = _trim_workload_spec(spec)
    return trimmed


WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"})


def _trim_workload_spec(spec: Obj) -> Obj:
    trimmed = dict(spec)
    template = spec.get("template") if "template" in spec else None
    if isinstance(template, dict):  # Deployment, StatefulSet, DaemonSet, ReplicaSet, Job
        pod_spec = template.get("spec")
        trimmed["template"] = {**template, **({"spec": _trim_pod_spec(pod_spec)} if isinstance(pod_spec, dict) else {})}
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict):  # CronJob
        job_spec = job_template.get("spec")
        if isinstance(job_spec, dict):
            trimmed["jobTemplate"] = {**job_template, "spec": _trim_workload_spec(job_spec)}
    return trimmed


def is_managed(obj: Obj) -> bool:
    return labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def generated_by_policy(obj: Obj) -> bool:
    """An object the operator generated for an AccessPolicy (managed, and an AccessPolicy is its controller)."""
    refs = [r for r in meta(obj).get("ownerReferences") or [] if isinstance(r, dict)]
    return is_managed(obj) and any(
        r.get("kind") == "AccessPolicy" and str(r.get("apiVersion", "")).startswith(f"{API_GROUP}/") for r in refs
    )
