"""Unused grants and rule AH-RBAC-023: effective permissions minus what the audit window shows used."""

import json
from typing import Any

import pytest

from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.catalogue.unused_grants import RULE_ID, with_usage
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.permissions import PermissionIndex
from access_hygiene.engine.usage.aggregation import UsageData
from access_hygiene.engine.usage.auditlog import parse_line
from access_hygiene.engine.usage.unused import unused_grants
from tests.pinned_clock import PINNED_NOW
from tests.unit.audit_events import SA, event

pytestmark = pytest.mark.unit

RBAC = "rbac.authorization.k8s.io/v1"
IDLE = "system:serviceaccount:shop:idle"


def cluster_role(name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": name, "labels": labels or {}},
            "rules": rules}  # fmt: skip


def binding(kind: str, name: str, role: str, sa: str, namespace: str = "shop", **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **meta}
    if kind == "RoleBinding":
        metadata["namespace"] = namespace
    return {"apiVersion": RBAC, "kind": kind, "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "shop"}]}  # fmt: skip


SNAPSHOT = ClusterSnapshot.from_objects(
    [
        cluster_role("app-edit", [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": ["", "apps"], "resources": ["pods", "deployments/scale"], "verbs": ["get", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lock"],
             "verbs": ["get", "update"]},
        ]),
        cluster_role("metrics-reader", [{"nonResourceURLs": ["/metrics", "/debug/*"], "verbs": ["get"]}]),
        cluster_role("system:discovery", [{"nonResourceURLs": ["/api", "/api/*"], "verbs": ["get"]}],
                     labels={"kubernetes.io/bootstrapping": "rbac-defaults"}),
        binding("RoleBinding", "app-edit", "app-edit", "orders-api"),
        binding("RoleBinding", "idle-edit", "app-edit", "idle"),
        binding("ClusterRoleBinding", "app-metrics", "metrics-reader", "orders-api"),
        {**binding("ClusterRoleBinding", "system:discovery", "system:discovery", "orders-api"),
         "metadata": {"name": "system:discovery", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}}},
    ]
)  # fmt: skip

USED = [
    event("get", "configmaps", name="app-config", at="2026-11-01T00:00:00Z"),
    event("list", "configmaps", at="2026-11-09T00:00:00Z"),
    event("patch", "deployments", group="apps", subresource="scale", name="web"),
    event("get", "leases", group="coordination.k8s.io", name="other"),  # not the named one: "lock" stays unused
    event("get", uri="/metrics"),
    event("delete", "configmaps", name="x", allowed=False),  # denied requests use nothing
    event("get", "pods", namespace="billing", name="p"),  # another namespace: not this RoleBinding's
]


def usage_of(*events: dict[str, Any], min_window: float = 7 * 86400) -> UsageData:
    usage = UsageData(min_window_seconds=min_window)
    for body in events:
        parsed = parse_line(json.dumps(body))
        assert isinstance(parsed, list)
        for request in parsed:
            usage.add(request)
    return usage


def test_unused_is_granted_minus_used_per_binding() -> None:
    usage = usage_of(*USED)
    subject, subject_usage = next(usage.service_accounts())
    results = unused_grants(PermissionIndex.build(SNAPSHOT), subject, subject_usage)
    described = {r.binding.ref.name: [p.describe() for p in r.unused] for r in results}
    assert described == {
        "app-metrics": ["/debug/*: get"],
        "app-edit": [
            "configmaps: watch,create,delete",
            "deployments/scale: get,patch",  # used only in group apps
            "pods: get,patch",
            "deployments/scale.apps: get",
            "pods.apps: get,patch",
            "leases.coordination.k8s.io named lock: get,update",
        ],
    }
    assert "system:discovery" not in described  # default bindings are skipped


def test_rule_reports_active_service_accounts_only() -> None:
    ctx = with_usage(AuditContext(now=PINNED_NOW), usage_of(*USED))
    findings = run_audit(SNAPSHOT, ctx, only=[RULE_ID])
    assert sorted((f.object.kind, f.object.name, str(f.subject)) for f in findings) == [
        ("ClusterRoleBinding", "app-metrics", SA),
        ("RoleBinding", "app-edit", SA),
    ]  # `idle` is bound too but made no request: never reported
    edit = next(f for f in findings if f.object.name == "app-edit")
    assert edit.namespace == "shop"
    assert edit.message.startswith(
        "RoleBinding shop/app-edit (ClusterRole app-edit) grants permissions unused in 19d10h"
    )
    assert "configmaps: watch,create,delete" in edit.message


def test_rule_is_silent_without_usage_or_on_a_short_window() -> None:
    assert run_audit(SNAPSHOT, AuditContext(now=PINNED_NOW), only=[RULE_ID]) == []
    short = usage_of(*USED[2:])  # a single instant
    assert not short.judgeable
    assert run_audit(SNAPSHOT, with_usage(AuditContext(now=PINNED_NOW), short), only=[RULE_ID]) == []
    forced = usage_of(*USED[2:], min_window=0)
    assert len(run_audit(SNAPSHOT, with_usage(AuditContext(now=PINNED_NOW), forced), only=[RULE_ID])) == 2


def test_fully_used_binding_has_no_finding_and_wildcards_count_as_used() -> None:
    snapshot = ClusterSnapshot.from_objects([
        cluster_role("wide", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        binding("RoleBinding", "wide", "wide", "orders-api"),
    ])  # fmt: skip
    usage = usage_of(event("get", "pods", name="a"), min_window=0)
    assert run_audit(snapshot, with_usage(AuditContext(now=PINNED_NOW), usage), only=[RULE_ID]) == []


def test_excluded_subjects_are_skipped() -> None:
    usage = usage_of(*USED, min_window=0)
    ctx = with_usage(AuditContext(now=PINNED_NOW, excluded_subject_prefixes=("system:serviceaccount:shop:",)), usage)
    assert run_audit(SNAPSHOT, ctx, only=[RULE_ID]) == []


def test_idle_account_with_only_denied_requests_is_judged() -> None:
    usage = usage_of(event("list", "secrets", user=IDLE, allowed=False), *USED, min_window=0)
    findings = run_audit(SNAPSHOT, with_usage(AuditContext(now=PINNED_NOW), usage), only=[RULE_ID])
    assert ("idle-edit", IDLE) in {(f.object.name, str(f.subject)) for f in findings}
