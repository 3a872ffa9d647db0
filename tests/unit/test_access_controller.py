"""The just-in-time access controller's API side (k8s/access_grants.py) over a recording fake of the REST calls:
what it writes for each decision, that it never touches a binding it does not own, and that a no-op writes
nothing. The real API server is in tests/cluster/test_access_jit.py."""

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from access_hygiene.clock import FixedClock
from access_hygiene.k8s import access_grants, resources
from access_hygiene.k8s.access_grants import ACCESS_WATCHES, AccessController, UrgentWorkQueue
from access_hygiene.k8s.watch_cache import ClusterState, WatchCache
from access_hygiene.metrics import AccessMetrics
from access_hygiene.settings import OperatorSettings
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

T0 = PINNED_NOW
CEILING = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
           "metadata": {"name": "access-hygiene-grant-ceiling", "resourceVersion": "1"},
           "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}  # fmt: skip
READER = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
          "metadata": {"name": "pod-reader", "resourceVersion": "1"},
          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}  # fmt: skip


def stamp(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


ELIGIBILITY = {
    "kind": "AccessEligibility",
    "metadata": {"name": "oncall", "resourceVersion": "1", "generation": 1},
    "spec": {
        "subjects": [{"kind": "User", "name": "alice"}],
        "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
        "namespaces": ["shop"],
        "maxDuration": "1h",
        "approvers": [{"kind": "User", "name": "bob"}],
    },
}
REQUEST = {
    "kind": "AccessRequest",
    "metadata": {"name": "fix", "namespace": "shop", "uid": "u-1", "resourceVersion": "1", "generation": 1,
                 "creationTimestamp": stamp(0)},
    "spec": {"eligibility": "oncall", "requester": {"username": "alice"}, "duration": "30m", "reason": "x"},
}  # fmt: skip
APPROVAL = {
    "kind": "AccessApproval",
    "metadata": {"name": "ok", "namespace": "shop", "resourceVersion": "1", "creationTimestamp": stamp(1)},
    "spec": {"request": "fix", "approver": {"username": "bob"}, "decision": "Approve"},
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.statuses: list[dict[str, Any]] = []  # the status of each status PATCH

    def writes(self) -> list[tuple[str, ...]]:
        return list(self.calls)


@pytest.fixture
def api_calls(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()

    def request(api: Any, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        recorder.calls.append((method, path, str(kwargs.get("query", {}).get("fieldManager", ""))))
        return {}

    def delete(api: Any, api_version: str, kind: str, name: str, namespace: str = "", uid: str = "") -> bool:
        recorder.calls.append(("DELETE", f"{kind} {namespace}/{name}", uid))
        return True

    def patch_merge(api: Any, api_version: str, kind: str, name: str, patch: Any, namespace: str = "",
                    subresource: str = "") -> dict[str, Any]:  # fmt: skip
        recorder.calls.append(("PATCH", f"{kind} {namespace}/{name}/{subresource}", patch["status"].get("state", "")))
        recorder.statuses.append(patch["status"])
        return {}

    monkeypatch.setattr(resources, "request", request)
    monkeypatch.setattr(resources, "delete", delete)
    monkeypatch.setattr(resources, "patch_merge", patch_merge)
    return recorder


def controller(clock: FixedClock, *objects: dict[str, Any]) -> AccessController:
    roles = ClusterState([])
    for role in (CEILING, READER):
        roles.upsert("ClusterRole", role)
    registry = CollectorRegistry()
    access = AccessController(
        None, WatchCache(None, ACCESS_WATCHES), roles, OperatorSettings(), AccessMetrics(registry), clock
    )
    access.registry = registry  # type: ignore[attr-defined]
    for obj in objects:
        access.state.upsert(obj["kind"], obj)
    return access


def run(clock: FixedClock, *objects: dict[str, Any]) -> tuple[AccessController, Any]:
    async def body() -> tuple[AccessController, Any]:
        access = controller(clock, *objects)
        return access, access._sync_request("shop", "fix")

    return asyncio.run(body())


def test_an_approved_request_creates_its_binding_with_post_and_the_field_manager(api_calls: Recorder) -> None:
    _, wake = run(FixedClock(T0 + timedelta(minutes=2)), ELIGIBILITY, REQUEST, APPROVAL)
    assert api_calls.writes()[0] == ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings",
                                     "access-hygiene")  # fmt: skip
    assert ("PATCH", "AccessRequest shop/fix/status", "Active") in api_calls.writes()
    assert ("PATCH", "AccessApproval shop/ok/status", "") in api_calls.writes()
    assert wake == T0 + timedelta(minutes=31)


def test_at_expiry_the_owned_binding_is_deleted_by_uid_and_the_lag_observed(api_calls: Recorder) -> None:
    clock = FixedClock(T0 + timedelta(minutes=2))
    access, _ = run(clock, ELIGIBILITY, REQUEST, APPROVAL)
    binding = api_calls_binding(access)
    active_status = {"state": "Active", "role": "ClusterRole/pod-reader", "startedAt": stamp(1),
                     "expiresAt": stamp(31), "approvedAt": stamp(1), "approvedBy": "bob"}  # fmt: skip
    api_calls.calls.clear()
    late = FixedClock(T0 + timedelta(minutes=31, seconds=0.25))
    access, wake = run(late, ELIGIBILITY, {**REQUEST, "status": active_status}, APPROVAL, binding)
    assert api_calls.writes()[0] == ("DELETE", "RoleBinding shop/ah-jit-fix", "b-1")
    assert ("PATCH", "AccessRequest shop/fix/status", "Expired") in api_calls.writes()
    assert wake is None
    lag_count = access.registry.get_sample_value("access_hygiene_access_revocation_lag_seconds_count")  # type: ignore[attr-defined]
    lag_sum = access.registry.get_sample_value("access_hygiene_access_revocation_lag_seconds_sum")  # type: ignore[attr-defined]
    assert (lag_count, lag_sum) == (1.0, 0.25)


def api_calls_binding(access: AccessController) -> dict[str, Any]:
    """The binding the first decision rendered, as the watch would deliver it (with a uid)."""
    decision = access_grants.decide_request(
        access.state.get("AccessRequest", "shop", "fix") or {},
        access.state.get("AccessEligibility", "", "oncall"),
        [APPROVAL],
        access._role_rules,
        access._limits(),
        T0 + timedelta(minutes=2),
    )
    assert decision.binding is not None
    binding = dict(decision.binding)
    binding["metadata"] = {**binding["metadata"], "uid": "b-1", "resourceVersion": "1"}
    return binding


def test_a_labelled_binding_the_request_does_not_own_is_left_alone(api_calls: Recorder) -> None:
    foreign = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "someone-elses", "namespace": "shop", "uid": "x", "resourceVersion": "1",
                            "labels": {"accesshygiene.io/access-request": "fix"}},
               "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": []}  # fmt: skip
    run(FixedClock(T0 + timedelta(minutes=40)), ELIGIBILITY, REQUEST, APPROVAL, foreign)
    assert not [call for call in api_calls.writes() if call[0] == "DELETE"]


def test_a_no_op_decision_writes_nothing(api_calls: Recorder) -> None:
    clock = FixedClock(T0 + timedelta(minutes=2))
    access, _ = run(clock, ELIGIBILITY, REQUEST, APPROVAL)
    binding = api_calls_binding(access)
    decision = access_grants.decide_request(
        REQUEST, ELIGIBILITY, [APPROVAL], access._role_rules, access._limits(), clock.now()
    )
    approval_status = {"conditions": [{"type": "Counted", "status": "True", "reason": "Counted",
                                       "message": "Approve by bob counted"}]}  # fmt: skip
    api_calls.calls.clear()
    run(
        FixedClock(T0 + timedelta(minutes=5)),
        ELIGIBILITY,
        {**REQUEST, "status": decision.status},
        {**APPROVAL, "status": approval_status},
        binding,
    )
    assert api_calls.writes() == []


def test_the_urgent_lane_goes_first_and_a_key_is_never_worked_on_twice_at_once() -> None:
    async def body() -> list[tuple[str, ...]]:
        queue = UrgentWorkQueue()
        queue.add(("request", "a", "1"))
        queue.add(("request", "a", "2"))
        queue.add(("request", "a", "2"), urgent=True)  # promoted
        queue.add(("request", "a", "3"), urgent=True)
        taken = [await queue.get(), await queue.get()]
        queue.add(taken[0])  # queued again while being worked on: runs once more after done()
        taken.append(await queue.get())
        queue.done(taken[0])
        taken.append(await queue.get())
        return taken

    assert asyncio.run(body()) == [("request", "a", "2"), ("request", "a", "3"), ("request", "a", "1"),
                                   ("request", "a", "2")]  # fmt: skip


def test_overdue_grants_and_active_grants_by_role_are_read_at_scrape_time(api_calls: Recorder) -> None:
    clock = FixedClock(T0 + timedelta(minutes=2))
    access, _ = run(clock, ELIGIBILITY, REQUEST, APPROVAL)
    access.state.set_listener(None)  # its event loop is gone; the scrape reads the store alone
    access.state.upsert("RoleBinding", api_calls_binding(access))
    registry = access.registry  # type: ignore[attr-defined]
    active = registry.get_sample_value("access_hygiene_access_grants_active", {"role": "ClusterRole/pod-reader"})
    assert (active, registry.get_sample_value("access_hygiene_access_grants_overdue")) == (1.0, 0.0)
    clock.advance(29 * 60 + 1.5)  # 1.5 s past the expiry, nothing revoked yet (the operator was away)
    assert registry.get_sample_value("access_hygiene_access_grants_overdue") == 1.0
    assert registry.get_sample_value("access_hygiene_access_grants_overdue_max_seconds") == 1.5
    assert registry.get_sample_value("access_hygiene_access_requests", {"state": "Pending"}) == 1.0


MINTER = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
          "metadata": {"name": "minter", "resourceVersion": "1"},
          "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]}  # fmt: skip
ENDED = {"state": "Expired", "role": "ClusterRole/minter", "startedAt": stamp(1), "expiresAt": stamp(31),
         "endedAt": stamp(31), "approvedAt": stamp(1), "approvedBy": "bob", "observedGeneration": 1}  # fmt: skip


def token(name: str, uid: str, creator: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "1",
                         "creationTimestamp": stamp(10),
                         "annotations": {"kubernetes.io/service-account.name": "default",
                                         "accesshygiene.io/created-by": creator}}}  # fmt: skip


def sync_ended(mode: str, status: dict[str, Any], *secrets: dict[str, Any]) -> AccessController:
    async def body() -> AccessController:
        access = controller(FixedClock(T0 + timedelta(minutes=40)), ELIGIBILITY, {**REQUEST, "status": status})
        access.settings = OperatorSettings(mode=mode)  # type: ignore[call-arg]
        access.roles.upsert("ClusterRole", MINTER)
        for secret in secrets:
            access.roles.upsert("Secret", secret)
        access._sync_request("shop", "fix")
        return access

    return asyncio.run(body())


@pytest.mark.parametrize("mode", ["audit", "enforce"])
def test_leftovers_are_recorded_first_and_in_enforce_mode_only_the_requesters_recorded_ones_removed_after(
    api_calls: Recorder, mode: str
) -> None:
    alices, admins = token("kept", "u-a", "alice"), token("admins", "u-b", "admin")
    sync_ended(mode, ENDED, alices, admins)  # the first pass after the expiry records, removes nothing
    assert not [call for call in api_calls.writes() if call[0] == "DELETE"]
    [recorded] = api_calls.statuses
    assert [(item["name"], item["uid"], item["createdBy"]) for item in recorded["leftovers"]] == [
        ("admins", "u-b", "admin"),
        ("kept", "u-a", "alice"),
    ]
    api_calls.calls.clear()
    api_calls.statuses.clear()
    access = sync_ended(mode, {**ENDED, "leftovers": recorded["leftovers"]}, alices, admins)  # the record is stored
    deletes = [call for call in api_calls.writes() if call[0] == "DELETE"]
    if mode == "audit":
        assert (deletes, api_calls.statuses) == ([], [])  # a no-op: nothing written
        return
    assert deletes == [("DELETE", "Secret shop/kept", "u-a")]  # by uid; the admin's is never touched
    [after] = api_calls.statuses
    assert [(item["name"], item.get("removedAt")) for item in after["leftovers"]] == [
        ("admins", None),
        ("kept", stamp(40)),
    ]
    messages = [finding.message for finding in access.findings()]
    assert messages[1].endswith(f"outlived it: removed at {stamp(40)} (enforce mode)")
    assert messages[0].endswith("and outlives it")


def announced_reasons(access: AccessController) -> list[str]:
    """What the controller handed its EventRecorder (the recorder's thread is not started here)."""
    return [event["reason"] for event in access.events._announcements]


@pytest.mark.parametrize("stored", [True, False], ids=["stored-before-the-failure", "not-stored"])
def test_a_transition_is_announced_once_when_its_status_write_fails_and_is_retried(
    api_calls: Recorder, monkeypatch: pytest.MonkeyPatch, stored: bool
) -> None:
    """A status write can fail after the API server stored it (a timeout, a 5xx after the commit): the watch then
    delivers the new state and the retry decides no transition. Its Event must still come, and only once."""
    first_write = True

    def patch_merge(api: Any, api_version: str, kind: str, name: str, patch: Any, namespace: str = "",
                    subresource: str = "") -> dict[str, Any]:  # fmt: skip
        nonlocal first_write
        if kind == "AccessRequest" and first_write:
            first_write = False
            if stored:  # stored, and the watch delivers it before the retry
                request = access.state.get("AccessRequest", namespace, name) or {}
                metadata = {**request["metadata"], "resourceVersion": "2"}
                access.state.upsert("AccessRequest", {**request, "status": patch["status"], "metadata": metadata})
            raise resources.kubernetes.client.ApiException(status=504, reason="Gateway Timeout")
        return {}

    monkeypatch.setattr(resources, "patch_merge", patch_merge)

    async def body() -> list[str]:
        nonlocal access
        access = controller(FixedClock(T0 + timedelta(minutes=2)), ELIGIBILITY, REQUEST, APPROVAL)
        with pytest.raises(resources.kubernetes.client.ApiException):
            access._sync_request("shop", "fix")
        assert announced_reasons(access) == []  # nothing before the write succeeded or is seen stored
        access._sync_request("shop", "fix")  # the retry
        access._sync_request("shop", "fix")  # and another pass (the watch's echo)
        return announced_reasons(access)

    access: AccessController
    assert asyncio.run(body()) == ["AccessGranted"]


def test_no_event_is_announced_into_a_namespace_being_deleted_but_the_grant_is_still_revoked(
    api_calls: Recorder,
) -> None:
    """The API server refuses new content in a terminating namespace; after a namespace of 1,000 requests is
    deleted, their Events would otherwise fill the recorder's backlog (20/s, 1,000 deep, oldest dropped)."""
    clock = FixedClock(T0 + timedelta(minutes=2))
    access, _ = run(clock, ELIGIBILITY, REQUEST, APPROVAL)
    assert announced_reasons(access) == ["AccessGranted"]  # a live namespace: announced
    binding = api_calls_binding(access)
    active_status = {"state": "Active", "role": "ClusterRole/pod-reader", "startedAt": stamp(1),
                     "expiresAt": stamp(31), "approvedAt": stamp(1), "approvedBy": "bob"}  # fmt: skip
    terminating = {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "resourceVersion": "3", "deletionTimestamp": stamp(30)},
                   "status": {"phase": "Terminating"}}  # fmt: skip
    api_calls.calls.clear()

    async def expire() -> AccessController:
        access = controller(FixedClock(T0 + timedelta(minutes=31)), ELIGIBILITY,
                            {**REQUEST, "status": active_status}, APPROVAL, binding)  # fmt: skip
        access.roles.upsert("Namespace", terminating)
        access._sync_request("shop", "fix")
        return access

    access = asyncio.run(expire())
    assert api_calls.writes()[0] == ("DELETE", "RoleBinding shop/ah-jit-fix", "b-1")
    assert ("PATCH", "AccessRequest shop/fix/status", "Expired") in api_calls.writes()
    assert announced_reasons(access) == []
