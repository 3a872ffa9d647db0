"""A point-in-time view of the cluster objects the audit rules read.

Objects are plain dicts shaped like the API's JSON (camelCase), so the same snapshot can be
loaded from the live API (k8s/), from `kubectl get -o yaml` output or from manifest files (cli/).
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
        """Add one object by its kind; returns False for kinds the rules do not read."""
        attr = KIND_FIELDS.get(str(obj.get("kind", "")))
        if attr is None:
            return False
        getattr(self, attr).append(obj)
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
