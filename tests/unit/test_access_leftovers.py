"""AH-GOV-005: what an ended just-in-time window left behind (engine/access/leftovers.py)."""

from typing import Any

import pytest

from access_hygiene.engine.access.leftovers import (
    creatable_kinds,
    find_leftovers,
    leftover_findings,
    recorded_leftovers,
    removable_leftovers,
    removal_refusal,
)

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


# Enforce mode: what is removable (removal_refusal / removable_leftovers) -------------------------------------------

ALICE = "alice"
STAMP = "accesshygiene.io/created-by"


def live(kind: str, name: str, uid: str, creator: str | None = ALICE, created: str = "2030-06-15T12:10:00Z",
         **metadata: Any) -> dict[str, Any]:  # fmt: skip
    annotations = {STAMP: creator} if creator is not None else {}
    return obj(kind, name, created, metadata={"uid": uid, "annotations": annotations, **metadata})


def name_of(item: dict[str, Any]) -> str:
    return str(item["metadata"]["name"])


def recorded(*items: dict[str, Any]) -> dict[str, Any]:
    """An ended request whose stored status (the grant's record) lists `items` as found by find_leftovers."""
    ended = request()
    found = find_leftovers(ended, MINTER, items)
    return {**ended, "status": {**ended["status"], "leftovers": [item.as_status() for item in found]}}


def test_the_record_keeps_uid_and_creator_of_each_leftover() -> None:
    token = live("Secret", "kept-token", "u-secret", **TOKEN["metadata"])
    token["metadata"]["annotations"] = {**TOKEN["metadata"]["annotations"], STAMP: ALICE}
    [item] = recorded(token)["status"]["leftovers"]
    assert (item["uid"], item["createdBy"]) == ("u-secret", ALICE)
    assert leftover_findings(request(), find_leftovers(request(), MINTER, [token]))[0].message.startswith(
        "Secret kept-token (a long-lived token of ServiceAccount builder) was created by alice at "
    )


def _binding(name: str, uid: str, creator: str | None = ALICE, **extra: Any) -> dict[str, Any]:
    made = live("RoleBinding", name, uid, creator, **extra)
    made.update(roleRef={"kind": "ClusterRole", "name": "edit"},
                subjects=[{"kind": "ServiceAccount", "name": "builder", "namespace": "shop"}])  # fmt: skip
    return made


def test_only_recorded_objects_the_requester_created_inside_the_window_and_still_the_same_are_removable() -> None:
    mine = _binding("backdoor", "u-1")
    token = live("Secret", "kept-token", "u-2")
    token["metadata"]["annotations"]["kubernetes.io/service-account.name"] = "builder"
    others = _binding("bobs", "u-3", creator="bob")  # another user's, same namespace, same window
    unstamped = _binding("unstamped", "u-4", creator=None)  # made before the stamp existed
    pod = live("Pod", "shell", "u-5")
    pod.update(spec={"serviceAccountName": "builder"}, status={"phase": "Running"})
    stored = recorded(mine, token, others, unstamped, pod)
    assert {item["name"] for item in stored["status"]["leftovers"]} == {
        "backdoor", "kept-token", "bobs", "unstamped", "shell"
    }  # fmt: skip
    by_name = {name_of(o): o for o in (mine, token, others, unstamped, pod)}

    def lookup(kind: str, name: str) -> dict[str, Any] | None:
        return by_name.get(name)

    assert sorted(item.name for item in removable_leftovers(stored, lookup)) == ["backdoor", "kept-token"]
    refusals = {item.name: removal_refusal(stored, item, lookup(item.kind, item.name))
                for item in recorded_leftovers(stored)}  # fmt: skip
    assert refusals == {
        "backdoor": None,
        "kept-token": None,
        "bobs": "created by bob, not by the requester alice",
        "unstamped": "no accesshygiene.io/created-by stamp: its creator is unknown",
        "shell": "a Pod is reported, never removed",
    }


def test_a_replaced_restamped_vanished_or_unrecorded_object_is_never_removed() -> None:
    stored = recorded(_binding("backdoor", "u-1"))
    [item] = recorded_leftovers(stored)
    assert removal_refusal(stored, item, _binding("backdoor", "u-other")) == (
        "replaced since it was recorded (uid u-other, recorded u-1)"
    )
    assert removal_refusal(stored, item, _binding("backdoor", "u-1", creator="bob")) == (
        "its accesshygiene.io/created-by stamp no longer names the requester"
    )
    assert removal_refusal(stored, item, None) == "no longer exists"
    outside = _binding("backdoor", "u-1", created="2030-06-15T12:31:00Z")
    assert removal_refusal(stored, item, outside) == "created outside the grant's window"
    ours = _binding("backdoor", "u-1", labels={"app.kubernetes.io/managed-by": "access-hygiene"})
    assert removal_refusal(stored, item, ours) == "the operator's own"
    # Found live but not in the stored record (the first pass after expiry records; only the next one removes).
    assert removable_leftovers(request(), lambda kind, name: _binding("backdoor", "u-1")) == []


def test_nothing_is_removable_before_the_grant_has_ended_and_a_removal_is_done_once() -> None:
    stored = recorded(_binding("backdoor", "u-1"))
    active = {**stored, "status": {**stored["status"], "state": "Active"}}
    assert removable_leftovers(active, lambda kind, name: _binding("backdoor", "u-1")) == []
    done = {**stored, "status": {**stored["status"], "leftovers": [
        {**stored["status"]["leftovers"][0], "removedAt": "2030-06-15T12:30:05Z"}]}}  # fmt: skip
    [item] = recorded_leftovers(done)
    assert removal_refusal(done, item, _binding("backdoor", "u-1")) == "already removed at 2030-06-15T12:30:05Z"
    assert leftover_findings(done, [item])[0].message.endswith(
        "and outlived it: removed at 2030-06-15T12:30:05Z (enforce mode)"
    )
