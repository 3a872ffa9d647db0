"""Namespace hygiene for one namespace: observe it, plan (pure), and in enforce mode apply."""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kubernetes

from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.ground.controls import namespace_controls
from access_hygiene.engine.ground.exemptions import namespace_exempt_by_config
from access_hygiene.engine.ground.snapshot import KIND_FIELDS, ClusterSnapshot, Obj, is_managed, name_of, namespace_of
from access_hygiene.engine.planning.namespace_plan import NamespacePlan, namespace_summary, plan_namespace
from access_hygiene.k8s import resources
from access_hygiene.models.findings import Finding
from access_hygiene.settings import OperatorSettings

MODE_LABEL = "accesshygiene.io/mode"
SUMMARY_ANNOTATION = "accesshygiene.io/hygiene-summary"


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


def _with_written(snapshot: ClusterSnapshot, written: list[Obj], removed: set[tuple[str, str, str]]) -> ClusterSnapshot:
    """The snapshot as it is after our writes, without reading it back from the API."""
    replaced = {(str(o.get("kind")), namespace_of(o), name_of(o)) for o in written} | removed
    after = ClusterSnapshot()
    for attr in set(KIND_FIELDS.values()):
        for obj in getattr(snapshot, attr):
            if (str(obj.get("kind")), namespace_of(obj), name_of(obj)) not in replaced:
                after.add(obj)
    for obj in written:
        after.add(obj)
    return after


def sync_namespace(
    api: kubernetes.client.ApiClient,
    namespace: Mapping[str, Any],
    settings: OperatorSettings,
    now: datetime,
    snapshot: ClusterSnapshot,
    findings: Sequence[Finding] | None = None,
) -> NamespaceSyncResult:
    """Plan and (enforce mode) apply the namespace controls. `snapshot` holds the namespace's objects and
    the cluster-scoped RBAC (the watch cache's view); nothing is listed here."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", **namespace}
    ctx = settings.audit_context(now=now)
    plan = plan_namespace(namespace, snapshot, ctx, findings)
    mode = namespace_mode(namespace, settings)
    writes = 0
    if mode == "enforce" and not plan.exempt:
        written: list[Obj] = []
        removed: set[tuple[str, str, str]] = set()
        for manifest in plan.apply:
            applied = resources.apply(api, manifest)
            written.append({**applied, "apiVersion": manifest["apiVersion"], "kind": manifest["kind"]})
            writes += 1
        for ref in plan.prune:  # only ever our own, labelled NetworkPolicies (e.g. the namespace became exempt)
            live = resources.get(api, ref.api_version, ref.kind, ref.name, ref.namespace)
            if live is not None and is_managed(live):
                resources.delete(api, ref.api_version, ref.kind, ref.name, ref.namespace, uid=live["metadata"]["uid"])
                removed.add((ref.kind, ref.namespace, ref.name))
                writes += 1
        if writes:
            # Plan again on the result for an honest summary, written in this same pass: waiting for the watch's
            # echo and a second reconcile cost every namespace one more write, one more reconcile and a re-audit
            # at start-up (2,000 summary patches after all policies were Ready). With the controller's findings
            # (those whose scope is this namespace), the same selection from the result's audit: the echo's
            # re-audit then finds the summary equal and writes nothing.
            snapshot = _with_written(snapshot, written, removed)
            after = None if findings is None else [f for f in run_audit(snapshot, ctx) if f.namespace == plan.namespace]
            plan = plan_namespace(namespace, snapshot, ctx, after)
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
