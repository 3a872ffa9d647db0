"""One full audit scan of the live cluster: snapshot, rules, capabilities, controls, exemptions."""

import time
from collections import Counter
from datetime import datetime

import kubernetes

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.k8s.snapshot_loader import load_snapshot
from access_hygiene.metrics import ScanResult
from access_hygiene.reconcile.audit import run_audit
from access_hygiene.reconcile.exemptions import exemption_counts
from access_hygiene.reconcile.namespace_classes import namespace_classes
from access_hygiene.reconcile.namespaces import namespace_controls
from access_hygiene.reconcile.permissions import service_account_capabilities
from access_hygiene.reconcile.snapshot import ClusterSnapshot, labels_of
from access_hygiene.settings import OperatorSettings


def scan_cluster(
    api: kubernetes.client.ApiClient, settings: OperatorSettings, now: datetime
) -> tuple[ClusterSnapshot, ScanResult]:
    started = time.monotonic()
    snapshot = load_snapshot(api, include_secrets=settings.read_secret_metadata)
    ctx = settings.audit_context(now=now)
    result = ScanResult(
        findings=run_audit(snapshot, ctx),
        subject_capabilities=service_account_capabilities(snapshot, ctx),
        namespace_controls=namespace_controls(snapshot, ctx),
        exemptions=exemption_counts(snapshot, ctx),
        completed_at=time.time(),
        duration_seconds=time.monotonic() - started,
        namespace_classes=namespace_classes(snapshot, ctx),
    )
    return snapshot, result


def managed_object_counts(snapshot: ClusterSnapshot) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for attr in (
        "service_accounts",
        "roles",
        "role_bindings",
        "cluster_roles",
        "cluster_role_bindings",
        "network_policies",
    ):
        for obj in getattr(snapshot, attr):
            if labels_of(obj).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
                counts[str(obj.get("kind"))] += 1
    return dict(counts)


def policy_state_counts(snapshot: ClusterSnapshot) -> dict[str, int]:
    counts = Counter({"ready": 0, "not-ready": 0, "refused": 0})
    for policy in snapshot.access_policies:
        conditions = (policy.get("status") or {}).get("conditions") or []
        ready = next((c for c in conditions if c.get("type") == "Ready"), None)
        if ready is not None and ready.get("status") == "True":
            counts["ready"] += 1
        elif ready is not None and str(ready.get("reason", "")).startswith("GrantCeiling"):
            counts["refused"] += 1
        else:
            counts["not-ready"] += 1
    return dict(counts)
