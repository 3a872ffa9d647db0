"""AH-GOV-005: what an ended just-in-time window left behind (engine/access/leftovers.py)."""

from typing import Any

import pytest

from access_hygiene.engine.access.leftovers import creatable_kinds, find_leftovers, leftover_findings

pytestmark = pytest.mark.unit

WINDOW = {"startedAt": "2030-06-15T12:00:00Z", "endedAt": "2030-06-15T12:30:00Z", "role": "ClusterRole/deployer"}
MINTER = [{"apiGroups": [""], "resources": ["secrets", "pods"], "verbs": ["create", "get"]},
          {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}]  # fmt: skip


def request(state: str = "Expired", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "fix-db", "namespace": "shop"},
        "spec": {"requester": {"username": "alice"}},
        "status": {"state": state, **WINDOW, **status},
    }


def obj(kind: str, name: str, created: str, namespace: str = "shop", **extra: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": namespace, "creationTimestamp": created, **extra.pop("metadata", {})}
    return {"kind": kind, "metadata": metadata, **extra}


TOKEN = {"metadata": {"annotations": {"kubernetes.io/service-account.name": "builder"}}}
OBJECTS = [
    obj("Secret", "builder-token", "2030-06-15T12:10:00Z", **TOKEN),
    obj("Secret", "tls", "2030-06-15T12:10:00Z"),  # not a token Secret
    obj("Secret", "old-token", "2030-06-15T11:59:59Z", **TOKEN),  # before the window
    obj("RoleBinding", "backdoor", "2030-06-15T12:30:00Z",
        roleRef={"kind": "ClusterRole", "name": "edit"},
        subjects=[{"kind": "ServiceAccount", "name": "builder", "namespace": "shop"}]),
    obj("RoleBinding", "ah-jit-fix-db", "2030-06-15T12:00:00Z",
        metadata={"labels": {"app.kubernetes.io/managed-by": "access-hygiene"}}),  # the grant itself
    obj("Pod", "shell", "2030-06-15T12:05:00Z", spec={"serviceAccountName": "builder"}, status={"phase": "Running"}),
    obj("Pod", "done", "2030-06-15T12:05:00Z", status={"phase": "Succeeded"}),
    obj("Secret", "elsewhere", "2030-06-15T12:10:00Z", namespace="web", **TOKEN),
]  # fmt: skip


def test_objects_created_inside_an_ended_window_that_the_role_could_create_are_reported() -> None:
    found = find_leftovers(request(), MINTER, OBJECTS)
    assert [(f.kind, f.name, f.detail) for f in found] == [
        ("Pod", "shell", "a Pod still running as ServiceAccount builder"),
        ("Secret", "builder-token", "a long-lived token of ServiceAccount builder"),
        ("RoleBinding", "backdoor", "binds ClusterRole/edit to ServiceAccount shop/builder"),
    ]
    finding = leftover_findings(request(), found)[1]
    assert (finding.rule_id, finding.severity.value, finding.object.kind) == ("AH-GOV-005", "high", "Secret")
    assert finding.message == (
        "Secret builder-token (a long-lived token of ServiceAccount builder) was created at 2030-06-15T12:10:00Z, "
        "inside the window (2030-06-15T12:00:00Z to 2030-06-15T12:30:00Z) of AccessRequest fix-db "
        "(ClusterRole/deployer for alice), and outlives it"
    )


def test_only_kinds_the_role_could_create_count() -> None:
    reader = [{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}]
    assert find_leftovers(request(), reader, OBJECTS) == []
    assert creatable_kinds([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]) == {
        "Secret",
        "RoleBinding",
        "Pod",
    }


@pytest.mark.parametrize("state", ["Pending", "Approved", "Active", "Denied"])
def test_nothing_is_reported_before_a_grant_has_ended(state: str) -> None:
    assert find_leftovers(request(state), MINTER, OBJECTS) == []


def test_a_revoked_grant_that_never_started_has_no_window() -> None:
    assert find_leftovers(request("Revoked", startedAt=""), MINTER, OBJECTS) == []
