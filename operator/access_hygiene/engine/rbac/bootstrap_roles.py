"""The default ClusterRoles kube-apiserver creates on every start (bootstrap policy), as shipped data.

A manifest scan sees only the objects it is given, yet a RoleBinding to `admin`, `edit` or `view` grants what
the cluster's built-in roles hold. The rules of every ClusterRole labelled
kubernetes.io/bootstrapping=rbac-defaults (the aggregated admin/edit/view with their aggregationRule and
their `system:aggregate-to-*` sources included) are read from a real kube-apiserver by
`make generate` (scripts/generate_bootstrap_roles.py) into bootstrap_roles.json next to this module. A
contract test checks that the committed data equals what the running kube-apiserver serves.

The permission engine uses a bootstrap role only when the snapshot has no ClusterRole of that name, so a
live snapshot (which always holds them) is unaffected and a modified built-in role in a dump wins.
"""

import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from access_hygiene.engine.ground.snapshot import Obj, annotations_of, labels_of, name_of

DATA_FILE = "bootstrap_roles.json"
BOOTSTRAP_SELECTOR = "kubernetes.io/bootstrapping=rbac-defaults"
_KEPT_ANNOTATIONS = ("rbac.authorization.kubernetes.io/autoupdate",)


def trim_cluster_role(obj: Mapping[str, Any]) -> Obj:
    """The fields of a served ClusterRole the engine reads (name, labels, autoupdate, aggregationRule, rules),
    in a stable form: what the generator writes and what the contract test compares."""
    metadata: Obj = {"name": name_of(dict(obj))}
    labels = labels_of(dict(obj))
    if labels:
        metadata["labels"] = dict(sorted(labels.items()))
    annotations = {k: v for k, v in annotations_of(dict(obj)).items() if k in _KEPT_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    trimmed: Obj = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": metadata}
    if obj.get("aggregationRule"):
        trimmed["aggregationRule"] = obj["aggregationRule"]
    trimmed["rules"] = [dict(rule) for rule in obj.get("rules") or []]
    return trimmed


def bootstrap_document(cluster_roles: Iterable[Mapping[str, Any]], kubernetes_version: str) -> Obj:
    """The JSON document of the shipped data: trimmed roles sorted by name."""
    trimmed = sorted((trim_cluster_role(obj) for obj in cluster_roles), key=lambda o: str(o["metadata"]["name"]))
    return {"kubernetesVersion": kubernetes_version, "selector": BOOTSTRAP_SELECTOR, "clusterRoles": trimmed}


def render_document(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=1, sort_keys=False) + "\n"


@cache
def _document() -> Obj:
    data: Obj = json.loads(resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8"))
    return data


def kubernetes_version() -> str:
    """The Kubernetes version the shipped data was read from (e.g. v1.36.3)."""
    return str(_document()["kubernetesVersion"])


def bootstrap_cluster_roles() -> tuple[Obj, ...]:
    """The shipped default ClusterRoles (API-shaped dicts; callers must not mutate them)."""
    return tuple(_document()["clusterRoles"])


def with_bootstrap_roles(cluster_roles: Iterable[Obj]) -> list[Obj]:
    """The snapshot's ClusterRoles plus every default ClusterRole whose name the snapshot lacks."""
    present = list(cluster_roles)
    names = {name_of(obj) for obj in present}
    return present + [obj for obj in bootstrap_cluster_roles() if name_of(obj) not in names]
