"""Just-in-time access admission rendering: what is bound how, that the hygiene admission's switch-off and pruning
never select these objects, and which fields the immutability check covers. The CEL itself is proven on the real
API server (tests/cluster/test_access_admission.py)."""

from typing import Any

import pytest

from access_hygiene import MANAGED_BY_LABEL
from access_hygiene.render import access_admission
from access_hygiene.render.access_admission import (
    APPROVAL_POLICY,
    ELIGIBILITY_POLICY,
    REQUEST_STATUS_POLICY,
    render_access_admission,
)
from access_hygiene.render.admission import COMPONENT_LABEL
from access_hygiene.render.admission import selector as hygiene_selector

pytestmark = pytest.mark.unit

OPERATOR = "system:serviceaccount:access-hygiene:access-hygiene"


def _matches(selector: str, labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in (term.split("=") for term in selector.split(",")))


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in render_access_admission(OPERATOR) if o["kind"] == kind}


def test_each_policy_has_one_deny_binding_with_params_exactly_where_it_has_a_param_kind() -> None:
    policies = _by_kind("ValidatingAdmissionPolicy")
    bindings = _by_kind("ValidatingAdmissionPolicyBinding")
    assert set(policies) == set(bindings)
    for name, binding in bindings.items():
        assert binding["spec"]["policyName"] == name
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert ("paramRef" in binding["spec"]) == ("paramKind" in policies[name]["spec"])
        assert policies[name]["spec"]["failurePolicy"] == "Fail"
    assert policies[ELIGIBILITY_POLICY]["spec"]["paramKind"]["kind"] == "AccessEligibility"
    assert policies[APPROVAL_POLICY]["spec"]["paramKind"]["kind"] == "AccessRequest"


def test_policies_come_before_their_bindings() -> None:
    kinds = [o["kind"] for o in render_access_admission(OPERATOR)]
    for index, kind in enumerate(kinds):
        if kind == "ValidatingAdmissionPolicyBinding":
            assert kinds[index - 1] == "ValidatingAdmissionPolicy"


def test_hygiene_admission_switch_off_and_pruning_never_select_them() -> None:
    """delete_admission and the writer's pruning select by the hygiene admission labels: a JIT policy matching
    them would be removed whenever admission.enabled is false."""
    for manifest in render_access_admission(OPERATOR):
        labels = manifest["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "access-hygiene"
        assert labels[COMPONENT_LABEL] == "access-admission"
        assert not _matches(hygiene_selector(None), labels)  # type: ignore[arg-type]
        assert _matches(access_admission.selector(), labels)
        assert "ownerReferences" not in manifest["metadata"]


def test_only_the_operator_may_write_request_status() -> None:
    policy = _by_kind("ValidatingAdmissionPolicy")[REQUEST_STATUS_POLICY]
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["accessrequests/status"]
    assert f'request.userInfo.username == "{OPERATOR}"' in policy["spec"]["validations"][0]["expression"]


def test_every_validation_has_a_static_fallback_message() -> None:
    for policy in _by_kind("ValidatingAdmissionPolicy").values():
        for validation in policy["spec"]["validations"]:
            assert validation["message"]
            assert validation["messageExpression"]
            assert validation["reason"] == "Forbidden"


def test_a_pending_request_carries_the_eligibility_approvals_are_judged_against() -> None:
    """status.eligibility (the approval policy's only source for the eligibility): role and approvers copied,
    self-approval effective only when the eligibility allows it and the role is low-risk; absent when the
    eligibility is unknown (admission then refuses approvals: "not checked yet")."""
    from tests.unit.test_access_state import decide, eligibility, request

    pending = decide(request())
    assert pending.state == "Pending"
    assert pending.status["eligibility"] == {
        "roleRef": {"kind": "ClusterRole", "name": "pod-reader"},
        "approvers": [{"kind": "User", "name": "bob"}, {"kind": "Group", "name": "sre"}],
        "selfApproval": False,
    }
    low_risk = decide(request(), elig=eligibility(selfApproval=True))
    assert low_risk.status["eligibility"]["selfApproval"] is True
    risky = decide(request(), elig=eligibility(selfApproval=True, roleRef={"kind": "ClusterRole", "name": "deployer"}))
    assert risky.status["eligibility"]["selfApproval"] is False
    assert "eligibility" not in decide(request(), no_eligibility=True).status


def test_the_creator_stamp_mutates_secrets_and_rolebindings_on_create_and_update_and_never_refuses() -> None:
    """What JIT leftovers are attributed by (engine/access/leftovers.py). Its CEL runs in
    tests/cluster/test_access_jit.py (stamped on create, restored on update, another user's objects not removed)."""
    from access_hygiene.render.access_admission import CREATOR_STAMP_POLICY, creator_stamp_policy

    policy, binding = creator_stamp_policy(OPERATOR)
    assert (policy["kind"], binding["kind"]) == ("MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": CREATOR_STAMP_POLICY}
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Ignore"  # a failed stamp leaves the object unattributed: never removed
    assert [(r["apiGroups"], r["resources"], r["operations"]) for r in spec["matchConstraints"]["resourceRules"]] == [
        ([""], ["secrets"], ["CREATE", "UPDATE"]),
        (["rbac.authorization.k8s.io"], ["rolebindings"], ["CREATE", "UPDATE"]),
    ]
    assert spec["matchConditions"] == [
        {"name": "not-the-operator", "expression": f'request.userInfo.username != "{OPERATOR}"'}
    ]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert "request.userInfo.username" in variables["stamp"]  # set on create by the API server, ...
    assert "oldObject.metadata" in variables["stamp"]  # ... kept as it was on update
    for manifest in (policy, binding):
        assert manifest["metadata"]["labels"][COMPONENT_LABEL] == "access-admission"
        assert "ownerReferences" not in manifest["metadata"]
