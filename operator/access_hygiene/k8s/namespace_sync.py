"""Namespace hygiene for one namespace: observe it, plan (pure), and in enforce mode apply."""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene.k8s import resources
from access_hygiene.reconcile.exemptions import namespace_exempt_by_config
from access_hygiene.reconcile.namespaces import (
    NamespacePlan,
    is_managed,
    namespace_controls,
    namespace_summary,
    plan_namespace,
)
from access_hygiene.reconcile.snapshot import ClusterSnapshot
from access_hygiene.settings import OperatorSettings

MODE_LABEL = "accesshygiene.io/mode"
SUMMARY_ANNOTATION = "accesshygiene.io/hygiene-summary"
_NAMESPACED_KINDS = (
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("accesshygiene.io/v1alpha1", "AccessPolicy"),
)


@dataclass
class NamespaceSyncResult:
    plan: NamespacePlan
    mode: str
    writes: int
    summary: dict[str, str]


def namespace_mode(namespace: Mapping[str, Any], settings: OperatorSettings) -> str:
    """A namespace label accesshygiene.io/mode=audit|enforce overrides the operator default."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    mode = labels.get(MODE_LABEL)
    return str(mode) if mode in ("audit", "enforce") else settings.mode


def observe_namespace(api: kubernetes.client.ApiClient, namespace: Mapping[str, Any]) -> ClusterSnapshot:
    name = str(namespace["metadata"]["name"])
    snapshot = ClusterSnapshot(namespaces=[{"apiVersion": "v1", "kind": "Namespace", **namespace}])
    for api_version, kind in _NAMESPACED_KINDS:
        for obj in resources.list_objects(api, api_version, kind, namespace=name):
            snapshot.add(obj)
    # Bindings reference ClusterRoles, and a ClusterRoleBinding can bind this namespace's SAs:
    # the token and AH-SA-006 checks need both.
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        for obj in resources.list_objects(api, "rbac.authorization.k8s.io/v1", kind):
            snapshot.add(obj)
    return snapshot


def sync_namespace(
    api: kubernetes.client.ApiClient, namespace: Mapping[str, Any], settings: OperatorSettings, now: datetime
) -> NamespaceSyncResult:
    snapshot = observe_namespace(api, namespace)
    ctx = settings.audit_context(now=now)
    plan = plan_namespace(namespace, snapshot, ctx)
    mode = namespace_mode(namespace, settings)
    writes = 0
    if mode == "enforce" and not plan.exempt:
        for manifest in plan.apply:
            resources.apply(api, manifest)
            writes += 1
        for ref in plan.prune:  # only ever our own, labelled NetworkPolicies (e.g. the namespace became exempt)
            live = resources.get(api, ref.api_version, ref.kind, ref.name, ref.namespace)
            if live is not None and is_managed(live):
                resources.delete(api, ref.api_version, ref.kind, ref.name, ref.namespace, uid=live["metadata"]["uid"])
                writes += 1
        if writes:  # what we just wrote changes the controls; read back once for an honest summary
            snapshot = observe_namespace(api, namespace)
            plan = plan_namespace(namespace, snapshot, ctx)
    summary = namespace_summary(plan, namespace_controls(snapshot, ctx))
    # System namespaces exempt by configuration are governed by nothing here, not even the summary.
    config_exempt = namespace_exempt_by_config(namespace, ctx)
    if settings.write_namespace_summary and not config_exempt and _annotations_differ(namespace, summary):
        resources.patch_merge(api, "v1", "Namespace", plan.namespace, {"metadata": {"annotations": summary}})
        writes += 1
    return NamespaceSyncResult(plan=plan, mode=mode, writes=writes, summary=summary)


def _annotations_differ(namespace: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    current = (namespace.get("metadata") or {}).get("annotations") or {}
    for key, value in wanted.items():
        old = current.get(key)
        if old == value:
            continue
        try:  # JSON summaries compare by content, not key order or spacing
            if old is not None and json.loads(old) == json.loads(value):
                continue
        except ValueError:
            pass
        return True
    return False
