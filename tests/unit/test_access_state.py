"""The just-in-time access state machine (engine/access/state.py): transitions, clock edges, bad input."""

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest

from access_hygiene.engine.access.state import (
    GrantLimits,
    RequestDecision,
    decide_request,
    eligibility_status,
    format_time,
    revocation_due,
    stale_bindings,
)
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

T0 = PINNED_NOW  # the request is created at T0, approved at T0 + 1 min unless a test says otherwise
READ_RULES = [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]
EDIT_RULES = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "update", "patch"]}]
SECRET_RULES = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
OUTSIDE_RULES = [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["delete"]}]
CEILING = [
    {"apiGroups": ["", "apps"], "resources": ["pods", "pods/log", "deployments", "secrets"], "verbs": ["*"]},
]
LIMITS = GrantLimits(ceiling_rules=CEILING)
ROLES: dict[tuple[str, str, str], list[dict[str, Any]]] = {
    ("ClusterRole", "pod-reader", ""): READ_RULES,
    ("ClusterRole", "deployer", ""): EDIT_RULES,
    ("ClusterRole", "secret-reader", ""): SECRET_RULES,
    ("ClusterRole", "job-killer", ""): OUTSIDE_RULES,
    ("Role", "shop-reader", "shop"): READ_RULES,
}


def lookup(kind: str, name: str, namespace: str) -> Sequence[Mapping[str, Any]] | None:
    return ROLES.get((kind, name, namespace))


def at(minutes: float) -> str:
    return format_time(T0 + timedelta(minutes=minutes))


def eligibility(**spec: Any) -> dict[str, Any]:
    base = {
        "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}],
        "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
        "namespaces": ["shop"],
        "maxDuration": "1h",
        "approvers": [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "sre"}],
    }
    return {"metadata": {"name": "oncall", "generation": 1}, "spec": {**base, **spec}}


def request(status: Mapping[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    base = {"eligibility": "oncall", "requester": {"username": "alice"}, "duration": "30m", "reason": "incident 7"}
    obj: dict[str, Any] = {
        "metadata": {"name": "fix-db", "namespace": "shop", "uid": "u-1", "generation": 1, "creationTimestamp": at(0)},
        "spec": {**base, **spec},
    }
    if status is not None:
        obj["status"] = dict(status)
    return obj


def approval(
    name: str = "ok", approver: str = "bob", minute: float = 1, decision: str = "Approve", **extra: Any
) -> dict[str, Any]:
    identity = {"username": approver, **({"groups": extra.pop("groups")} if "groups" in extra else {})}
    return {
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": at(minute)},
        "spec": {"request": "fix-db", "approver": identity, "decision": decision, **extra},
    }


def decide(
    req: Mapping[str, Any],
    approvals: Sequence[Mapping[str, Any]] = (),
    minute: float = 2,
    elig: Mapping[str, Any] | None = None,
    *,
    no_eligibility: bool = False,
) -> RequestDecision:
    chosen = None if no_eligibility else (elig if elig is not None else eligibility())
    return decide_request(req, chosen, approvals, lookup, LIMITS, T0 + timedelta(minutes=minute))


def condition(decision: RequestDecision, type_: str) -> dict[str, Any]:
    return next(c for c in decision.status["conditions"] if c["type"] == type_)


def test_a_request_without_approval_is_pending_and_waits_for_events_not_time() -> None:
    decision = decide(request())
    assert (decision.state, decision.binding, decision.wake_at) == ("Pending", None, None)
    assert condition(decision, "Approved")["message"] == "waiting for an approval from one of: User bob, Group sre"
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "AccessRequested")]


def test_an_approved_request_is_active_with_an_owned_labelled_binding_until_its_expiry() -> None:
    decision = decide(request(), [approval()])
    assert decision.state == "Active"
    assert decision.wake_at == T0 + timedelta(minutes=31)
    binding = decision.binding
    assert binding is not None
    assert binding["metadata"]["name"] == "ah-jit-fix-db"
    assert binding["metadata"]["namespace"] == "shop"
    assert binding["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "access-hygiene",
        "accesshygiene.io/access-request": "fix-db",
    }
    assert binding["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-reader"}
    assert binding["subjects"] == [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]
    status = decision.status
    assert (status["approvedBy"], status["approvedAt"], status["startedAt"], status["expiresAt"]) == (
        "bob",
        at(1),
        at(1),
        at(31),
    )
    assert status["role"] == "ClusterRole/pod-reader"
    assert status["bindings"] == ["ah-jit-fix-db"]
    assert condition(decision, "Active")["message"] == (
        f"RoleBinding ah-jit-fix-db binds ClusterRole/pod-reader to alice in shop until {at(31)}"
    )
    assert [e.reason for e in decision.events] == ["AccessGranted"]


def test_expiry_is_exact_to_the_microsecond() -> None:
    before = decide(request(), [approval()], minute=31 - 1e-8)
    assert before.state == "Active"
    on_time = decide(request(before.status), [approval()], minute=31)
    assert (on_time.state, on_time.binding, on_time.wake_at) == ("Expired", None, None)
    assert on_time.status["endedAt"] == at(31)
    assert [(e.type, e.reason) for e in on_time.events] == [("Normal", "AccessExpired")]
    assert stale_bindings(on_time, ["ah-jit-fix-db"]) == ["ah-jit-fix-db"]


def test_an_approval_seen_only_after_the_window_never_grants() -> None:
    # The operator was down for the whole window: the answer comes from the objects' times, not from when it looked.
    decision = decide(request(), [approval()], minute=90)
    assert (decision.state, decision.binding) == ("Expired", None)
    assert decision.status["expiresAt"] == at(31)


def test_start_at_in_the_future_schedules_then_grants() -> None:
    req = request(startAt=at(10))
    scheduled = decide(req, [approval()], minute=2)
    assert (scheduled.state, scheduled.binding, scheduled.wake_at) == ("Approved", None, T0 + timedelta(minutes=10))
    assert condition(scheduled, "Active")["reason"] == "Scheduled"
    started = decide(request(scheduled.status, startAt=at(10)), [approval()], minute=10)
    assert started.state == "Active"
    assert started.status["expiresAt"] == at(40)


def test_start_at_before_the_approval_counts_from_the_approval() -> None:
    decision = decide(request(startAt=at(-30)), [approval(minute=5)], minute=6)
    assert decision.status["startedAt"] == at(5)
    assert decision.status["expiresAt"] == at(35)


def test_self_approval_is_ignored_unless_allowed_and_low_risk() -> None:
    own = [approval(approver="alice")]
    refused = decide(request(), own)
    assert refused.state == "Pending"
    assert refused.approvals[0].reason == "SelfApprovalNotAllowed"
    assert "does not allow self-approval" in refused.approvals[0].message
    allowed = decide(request(), own, elig=eligibility(selfApproval=True))
    assert allowed.state == "Active"
    risky = decide(
        request(), own, elig=eligibility(selfApproval=True, roleRef={"kind": "ClusterRole", "name": "deployer"})
    )
    assert risky.state == "Pending"
    assert risky.approvals[0].message == (
        "alice: self-approval refused: ClusterRole/deployer is not low-risk: "
        "rules[0] grants patch, update (only get, list, watch are low-risk)"
    )


def test_only_approvers_count_and_groups_match_through_the_identity() -> None:
    stranger = decide(request(), [approval(approver="mallory")])
    assert stranger.state == "Pending"
    assert stranger.approvals[0].reason == "NotAnApprover"
    assert (
        "ignored: mallory is not an approver of AccessEligibility oncall" in condition(stranger, "Approved")["message"]
    )
    by_group = decide(request(), [approval(approver="carol", groups=["sre"])])
    assert (by_group.state, by_group.status["approvedBy"]) == ("Active", "carol")


def test_a_deny_denies_with_its_comment_and_the_earliest_decision_wins() -> None:
    denied = decide(request(), [approval("no", decision="Deny", comment="not during the freeze"), approval(minute=1.5)])
    assert denied.state == "Denied"
    assert condition(denied, "Approved")["message"] == f"denied by bob at {at(1)}: not during the freeze"
    assert [(e.type, e.reason) for e in denied.events] == [("Warning", "AccessDenied")]
    approved_first = decide(request(), [approval(minute=1), approval("no", decision="Deny", minute=1.5)])
    assert approved_first.state == "Active"


def test_an_approval_older_than_the_request_is_an_earlier_requests() -> None:
    decision = decide(request(), [approval(minute=-5)])
    assert decision.state == "Pending"
    assert decision.approvals[0].reason == "PredatesRequest"


def test_manual_revoke_ends_an_active_grant() -> None:
    active = decide(request(), [approval()])
    revoked = decide(request(active.status, revoked=True), [approval()], minute=3)
    assert (revoked.state, revoked.binding, revoked.wake_at) == ("Revoked", None, None)
    assert revoked.status["endedAt"] == at(3)
    assert condition(revoked, "Active")["reason"] == "RevokedManually"
    assert condition(revoked, "Approved")["status"] == "True"
    assert [(e.type, e.reason) for e in revoked.events] == [("Warning", "AccessRevoked")]


def test_eligibility_withdrawn_while_pending_denies_and_while_active_revokes() -> None:
    pending = decide(request())
    withdrawn_pending = decide(request(pending.status), no_eligibility=True)
    assert withdrawn_pending.state == "Denied"
    assert condition(withdrawn_pending, "Active")["message"] == "AccessEligibility oncall was deleted"
    active = decide(request(), [approval()])
    withdrawn_active = decide(request(active.status), [approval()], minute=3, no_eligibility=True)
    assert (withdrawn_active.state, withdrawn_active.binding) == ("Revoked", None)
    assert condition(withdrawn_active, "Active")["reason"] == "EligibilityWithdrawn"


def test_an_eligibility_not_seen_yet_keeps_the_request_pending_for_a_grace_then_denies_it_by_name() -> None:
    waiting = decide(request(), minute=0.1, no_eligibility=True)  # 6 s after the request was created
    assert (waiting.state, waiting.wake_at) == ("Pending", T0 + timedelta(seconds=10))
    assert condition(waiting, "Approved")["reason"] == "EligibilityNotFound"
    deny_at = format_time(T0 + timedelta(seconds=10))
    assert condition(waiting, "Approved")["message"] == (
        f"AccessEligibility oncall does not exist (yet); the request is denied at {deny_at} unless it appears"
    )
    appeared = decide(request(waiting.status), minute=0.15)
    assert appeared.state == "Pending"
    assert condition(appeared, "Approved")["reason"] == "AwaitingApproval"

    denied = decide(request(waiting.status), minute=10 / 60, no_eligibility=True)  # at the grace's end exactly
    assert (denied.state, denied.binding, denied.wake_at) == ("Denied", None, None)
    message = (
        "AccessEligibility oncall does not exist (still missing 10s after the request was created): nothing grants "
        "this request; create a new one naming an existing AccessEligibility"
    )
    for type_ in ("Approved", "Active"):
        assert (condition(denied, type_)["status"], condition(denied, type_)["reason"]) == (
            "False",
            "EligibilityNotFound",
        )
        assert condition(denied, type_)["message"] == message
    assert denied.status["endedAt"] == at(10 / 60)
    assert [(e.type, e.reason, e.message) for e in denied.events] == [("Warning", "AccessDenied", message)]
    assert decide(request(denied.status), minute=5).state == "Denied"  # final, even once the eligibility exists


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        ({"namespaces": ["web"]}, "NamespaceNotEligible", "does not grant in namespace shop (namespaces: web)"),
        ({"subjects": [{"kind": "User", "name": "dave"}]}, "NotEligible", "alice is not a subject"),
        ({"maxDuration": "15m"}, "DurationAboveMaximum", "duration 30m is longer than"),
        ({"roleRef": {"kind": "ClusterRole", "name": "deployer"}}, "EligibilityChanged", "now grants"),
    ],
)
def test_an_eligibility_narrowed_under_an_active_grant_revokes_it(
    change: dict[str, Any], reason: str, message: str
) -> None:
    active = decide(request(), [approval()])
    narrowed = decide(request(active.status), [approval()], minute=3, elig=eligibility(**change))
    assert (narrowed.state, narrowed.binding) == ("Revoked", None)
    assert condition(narrowed, "Active")["reason"] == reason
    assert message in condition(narrowed, "Active")["message"]


def test_final_states_stay_final_even_when_the_eligibility_returns() -> None:
    active = decide(request(), [approval()])
    gone = decide(request(active.status), [approval()], minute=3, no_eligibility=True)
    again = decide(request(gone.status), [approval()], minute=4)
    assert (again.state, again.binding, again.events) == ("Revoked", None, [])


def test_a_role_beyond_the_ceiling_grants_nothing_and_says_why() -> None:
    decision = decide(
        request(), [approval()], elig=eligibility(roleRef={"kind": "ClusterRole", "name": "secret-reader"})
    )
    assert (decision.state, decision.binding) == ("Denied", None)
    assert condition(decision, "Approved")["reason"] == "GrantCeilingExceeded"
    assert condition(decision, "Approved")["message"] == (
        "ClusterRole/secret-reader exceeds what the operator may grant: rules[0]: reading secrets exposes every "
        "Secret in scope (capability secrets-read is not allowed by the operator)"
    )
    outside = decide(request(), [approval()], elig=eligibility(roleRef={"kind": "ClusterRole", "name": "job-killer"}))
    assert 'outside the grant ceiling: delete jobs (apiGroup "batch")' in condition(outside, "Approved")["message"]


def test_unknown_roles_are_denied_with_where_they_were_looked_for() -> None:
    missing = decide(request(), [approval()], elig=eligibility(roleRef={"kind": "ClusterRole", "name": "nope"}))
    assert condition(missing, "Approved")["message"] == "ClusterRole/nope does not exist"
    role = decide(request(), [approval()], elig=eligibility(roleRef={"kind": "Role", "name": "web-reader"}))
    assert condition(role, "Approved")["message"] == "Role/web-reader does not exist in namespace shop"
    present = decide(request(), [approval()], elig=eligibility(roleRef={"kind": "Role", "name": "shop-reader"}))
    assert present.state == "Active"


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        ("0s", "duration: Value error, duration '0s' must be greater than 0s"),
        ("-30m", "duration: String should match pattern"),
        ("999999h", "duration: Value error, duration '999999h' is longer than the maximum 168h (7 days)"),
        ("1d", "duration: String should match pattern"),
    ],
)
def test_bad_durations_are_denied_with_the_field_and_the_rule(duration: str, message: str) -> None:
    decision = decide(request(duration=duration), [approval()])
    assert (decision.state, decision.binding) == ("Denied", None)
    assert condition(decision, "Approved")["reason"] == "InvalidSpec"
    assert message in condition(decision, "Approved")["message"]


def test_a_service_account_of_another_namespace_is_not_the_eligible_one() -> None:
    foreign = decide(request(requester={"username": "system:serviceaccount:shop:ci"}), [approval()])
    assert foreign.state == "Denied"
    assert condition(foreign, "Approved")["message"] == (
        "system:serviceaccount:shop:ci is not a subject of AccessEligibility oncall "
        "(subjects: User alice, ServiceAccount build/ci)"
    )
    own = decide(request(requester={"username": "system:serviceaccount:build:ci"}), [approval()])
    assert own.binding is not None
    assert own.binding["subjects"] == [{"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]


def test_a_no_op_decision_keeps_transition_times_and_emits_nothing() -> None:
    first = decide(request(), [approval()], minute=2)
    second = decide(request(first.status), [approval()], minute=7)
    assert second.events == []
    assert second.status == first.status


def test_eligibility_status_says_ready_and_whether_self_approval_is_honoured() -> None:
    now = T0
    ok = eligibility_status(eligibility(selfApproval=True), lookup, LIMITS, now)
    assert ok["conditions"][0]["status"] == "True"
    assert ok["conditions"][0]["message"] == "grants ClusterRole/pod-reader in shop for up to 1h"
    assert ok["selfApproval"] == {"allowed": True, "reason": ""}
    refused = eligibility_status(
        eligibility(roleRef={"kind": "ClusterRole", "name": "secret-reader"}), lookup, LIMITS, now
    )
    assert (refused["conditions"][0]["status"], refused["conditions"][0]["reason"]) == ("False", "GrantCeilingExceeded")
    assert refused["conditions"][0]["message"].startswith("grants nothing: ClusterRole/secret-reader exceeds")
    allowed = GrantLimits(ceiling_rules=CEILING, allowed_sensitive=frozenset({"secrets-read"}))
    assert eligibility_status(eligibility(roleRef={"kind": "ClusterRole", "name": "secret-reader"}), lookup, allowed,
                              now)["conditions"][0]["status"] == "True"  # fmt: skip
    per_namespace = eligibility_status(
        eligibility(roleRef={"kind": "Role", "name": "shop-reader"}, namespaces=["shop", "web"]), lookup, LIMITS, now
    )
    assert per_namespace["conditions"][0]["message"] == (
        "grants nothing: Role/shop-reader does not exist in namespace web"
    )


def test_revocation_due_measures_from_the_expiry() -> None:
    assert revocation_due(at(31), T0 + timedelta(minutes=30)) is None
    assert revocation_due(at(31), T0 + timedelta(minutes=31, seconds=2)) == timedelta(seconds=2)
    assert revocation_due("garbage", T0) is None


def test_an_approval_withdrawn_under_a_grant_revokes_it() -> None:
    active = decide(request(), [approval()])
    deleted = decide(request(active.status), [], minute=3)
    assert (deleted.state, deleted.binding) == ("Revoked", None)
    assert condition(deleted, "Active")["message"] == "the approval no longer counts: the approval was deleted"
    not_an_approver = decide(request(active.status), [approval()], minute=3, elig=eligibility(approvers=[
        {"kind": "User", "name": "carol"}]))  # fmt: skip
    assert not_an_approver.state == "Revoked"
    assert "bob is not an approver of AccessEligibility oncall" in condition(not_an_approver, "Active")["message"]
