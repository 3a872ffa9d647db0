"""Putting the operator's prerequisites into a cluster: CRDs, grant ceiling, manifests from files."""

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes
import yaml

from access_hygiene.k8s import resources
from access_hygiene.k8s.crds import install_crd
from access_hygiene.models.crd import build_crds
from access_hygiene.render.admission_parameters import parameters_crd
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

# The field manager of manifests applied on the user's behalf (`local --examples`, the tests' examples): a user's
# tool, like kubectl's "kubectl". Under the operator's own manager, the operator's later apply of part of such an
# object (its finalizer, its status) would relinquish the user's fields, the spec among them.
USER_FIELD_MANAGER = "access-hygiene-cli"


def install_prerequisites(api: kubernetes.client.ApiClient, ceiling_role: str) -> None:
    for crd in build_crds():
        install_crd(api, crd)
    install_crd(api, parameters_crd())  # the admission parameters' kind (installed early: k8s/admission.py)
    resources.apply(api, render_grant_ceiling_role(ceiling_role))


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            documents.extend(d for d in yaml.safe_load_all(file.read_text()) if isinstance(d, dict))
    return documents


def ensure_namespace(api: kubernetes.client.ApiClient, name: str) -> bool:
    """Create the Namespace if it does not exist; True when it was created. Never an apply: a server-side
    apply of a bare Namespace with the field manager that applied its manifest would drop that manifest's
    labels (an enforce-mode label among them) from the live object."""
    if resources.get(api, "v1", "Namespace", name) is not None:
        return False
    try:
        resources.create(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except kubernetes.client.ApiException as error:
        if error.status != 409:  # created meanwhile: fine
            raise
        return False
    return True


def apply_manifests(api: kubernetes.client.ApiClient, manifests: Iterable[Mapping[str, Any]]) -> list[str]:
    """Apply manifests as the user's tool would (USER_FIELD_MANAGER), creating their namespaces first (a
    Namespace's own manifest, when given, is applied as written and keeps its labels). Returns 'Kind ns/name'
    lines."""
    applied = []
    present: set[str] = set()
    for manifest in manifests:
        namespace = str(manifest.get("metadata", {}).get("namespace") or "")
        if namespace and namespace not in present:
            ensure_namespace(api, namespace)
            present.add(namespace)
        resources.apply(api, manifest, field_manager=USER_FIELD_MANAGER)
        applied.append(f"{manifest['kind']} {namespace + '/' if namespace else ''}{manifest['metadata']['name']}")
    return applied
