"""Admission for just-in-time access (AccessEligibility, AccessRequest, AccessApproval): native
ValidatingAdmissionPolicies and their bindings, always Deny, independent of the hygiene rules' admission mode.

They guard the JIT kinds themselves, so they are always on and carry their own component label (the hygiene
admission's pruning and switch-off never touch them) and no owner reference (turning hygiene admission off
deletes its owner ClusterRole, and the garbage collector would take these with it).

Where the facts come from (a policy sees the incoming object, one param object and the authorizer):
- the requester and approver identity: `request.userInfo`, set by the API server;
- a request's eligibility: paramKind AccessEligibility (a CRD: kubernetes/kubernetes#130887 stops only built-in
  param informers), every eligibility selected and only the one the request names judged;
- an approval's request: paramKind AccessRequest in the approval's namespace, only the named one judged. The
  approval is judged against the request's `status.eligibility`, the operator's resolution of the eligibility
  (roleRef, approvers, effective selfApproval: the operator alone knows whether the role is low-risk);
- "holds what is granted": the approver may `bind` the role in the namespace, the exact check Kubernetes makes
  before it lets anyone create that RoleBinding themselves (CEL `authorizer`).

Pure: names in, manifest dicts out.
"""

import json
from collections.abc import Sequence
from typing import Any

from access_hygiene import API_GROUP, API_VERSION, MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.models.access import CREATED_BY_ANNOTATION, AccessRequestSpec

ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT_VALUE = "access-admission"
PREFIX = "access-hygiene"
RBAC_GROUP = "rbac.authorization.k8s.io"
# The spec fields of an AccessRequest that never change after create (spec.revoked may go false -> true).
REQUEST_FIXED_FIELDS = tuple(
    field.alias or name for name, field in AccessRequestSpec.model_fields.items() if name != "revoked"
)
Obj = dict[str, Any]

REQUESTER_POLICY = f"{PREFIX}-accessrequest-requester"
ELIGIBILITY_POLICY = f"{PREFIX}-accessrequest-eligibility"
REQUEST_IMMUTABLE_POLICY = f"{PREFIX}-accessrequest-immutable"
REQUEST_STATUS_POLICY = f"{PREFIX}-accessrequest-status"
APPROVER_POLICY = f"{PREFIX}-accessapproval-approver"
APPROVAL_POLICY = f"{PREFIX}-accessapproval-request"
CREATOR_STAMP_POLICY = f"{PREFIX}-creator-stamp"

# CEL fragments about the caller (request.userInfo).
_USERNAME = "request.userInfo.username"
_GROUPS = "request.userInfo.?groups.orValue([])"


def _cel(value: str) -> str:
    return json.dumps(value)


def subject_is(subject: str, identity: str) -> str:
    """CEL: an RBAC-style Subject ({kind, name, namespace}) names an Identity: a User by name, a Group by
    membership, a ServiceAccount by its user name form."""
    return (
        f"(({subject}.kind == 'User' && {subject}.name == {identity}.username) || "
        f"({subject}.kind == 'Group' && {subject}.name in {identity}.?groups.orValue([])) || "
        f"({subject}.kind == 'ServiceAccount' && {identity}.username == 'system:serviceaccount:' + "
        f"{subject}.?namespace.orValue('') + ':' + {subject}.name))"
    )


def _labels() -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, COMPONENT_LABEL: COMPONENT_VALUE}


def selector() -> str:
    """Finds every object this module renders."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{COMPONENT_LABEL}={COMPONENT_VALUE}"


def _validation(expression: str, message_expression: str, message: str) -> Obj:
    # `message` is what the API server shows if the message expression itself fails to evaluate.
    return {
        "expression": expression,
        "messageExpression": message_expression,
        "message": message,
        "reason": "Forbidden",
    }


def _policy(
    name: str,
    resource: str,
    operations: Sequence[str],
    validations: Sequence[Obj],
    variables: Sequence[tuple[str, str]] = (),
    param_kind: str = "",
) -> Obj:
    spec: Obj = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [API_GROUP],
                    "apiVersions": ["*"],
                    "resources": [resource],
                    "operations": list(operations),
                }
            ]
        },
        "validations": list(validations),
    }
    if variables:
        spec["variables"] = [{"name": n, "expression": e} for n, e in variables]
    if param_kind:
        spec["paramKind"] = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": param_kind}
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": _labels()},
        "spec": spec,
    }


def _binding(policy: str, *, with_params: bool = False) -> Obj:
    spec: Obj = {"policyName": policy, "validationActions": ["Deny"]}
    if with_params:
        # Every object of the param kind (in the judged object's namespace, for a namespaced kind); each
        # validation skips those the object does not name. Nothing found (none exists at all) is admitted: a
        # request naming no existing eligibility, or an approval naming no existing request, grants nothing
        # (the operator denies the request; the approval's request must exist and be Pending when judged).
        spec["paramRef"] = {"selector": {}, "parameterNotFoundAction": "Allow"}
    return {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": _labels()},
        "spec": spec,
    }


def _identity_validations(kind: str, field: str, noun: str, verb: str) -> list[Obj]:
    """The Identity in `field` is the caller: the same user name, no group the caller is not in."""
    identity = f"object.spec.{field}"
    extra_groups = f"{identity}.?groups.orValue([]).filter(g, !(g in {_GROUPS}))"
    return [
        _validation(
            f"{identity}.username == {_USERNAME}",
            f"'{kind} refused: spec.{field}.username is ' + {identity}.username + ' but the {noun} is made by ' + "
            f"{_USERNAME} + '; one may only {verb} as oneself'",
            f"{kind} refused: spec.{field}.username must be the user making the {noun}",
        ),
        _validation(
            f"size({extra_groups}) == 0",
            f"'{kind} refused: spec.{field}.groups names groups ' + {_USERNAME} + ' is not in: ' + "
            f"{extra_groups}.join(', ')",
            f"{kind} refused: spec.{field}.groups names groups the caller is not in",
        ),
    ]


def requester_policy() -> Obj:
    """AccessRequest CREATE, no params: the requester is the caller. (Duration > 0 and <= 168h are the CRD
    schema's own CEL rules, judged before admission.)"""
    return _policy(
        REQUESTER_POLICY,
        "accessrequests",
        ("CREATE",),
        _identity_validations("AccessRequest", "requester", "request", "request"),
    )


def eligibility_policy() -> Obj:
    """AccessRequest CREATE against the AccessEligibility it names: subjects, namespaces, maxDuration."""
    other = "params.metadata.name != object.spec.eligibility || "
    eligibility = "' of AccessEligibility ' + params.metadata.name"
    namespace = "object.metadata.namespace"
    return _policy(
        ELIGIBILITY_POLICY,
        "accessrequests",
        ("CREATE",),
        [
            _validation(
                other + f"params.spec.subjects.exists(s, {subject_is('s', 'object.spec.requester')})",
                "'AccessRequest refused: ' + object.spec.requester.username + ' is not among the subjects' + "
                + eligibility,
                "AccessRequest refused: the requester is not among the subjects of the AccessEligibility",
            ),
            _validation(
                other + f"{namespace} in params.spec.namespaces",
                "'AccessRequest refused: namespace ' + "
                + namespace
                + " + ' is not among the namespaces' + "
                + eligibility
                + " + ' (' + params.spec.namespaces.join(', ') + ')'",
                "AccessRequest refused: the namespace is not among the namespaces of the AccessEligibility",
            ),
            _validation(
                other + "duration(object.spec.duration) <= duration(params.spec.maxDuration)",
                "'AccessRequest refused: spec.duration ' + object.spec.duration + ' exceeds maxDuration ' + "
                "params.spec.maxDuration + " + eligibility,
                "AccessRequest refused: spec.duration exceeds the maxDuration of the AccessEligibility",
            ),
        ],
        param_kind="AccessEligibility",
    )


def _same(field: str) -> str:
    new, old = f"object.spec.?{field}", f"oldObject.spec.?{field}"
    return f"({new}.hasValue() == {old}.hasValue() && (!{new}.hasValue() || {new}.value() == {old}.value()))"


def request_immutable_policy(fixed_fields: Sequence[str] = REQUEST_FIXED_FIELDS) -> Obj:
    """AccessRequest UPDATE: the spec never changes after create, except spec.revoked false -> true. An approval
    approves the request it saw, and an edit while the approval is on its way would change what it approves,
    so this holds for pending requests too. Metadata (kopf's annotations, finalizers) may change."""
    unchanged = " && ".join(_same(f) for f in fixed_fields)
    revoked, was_revoked = "object.spec.?revoked.orValue(false)", "oldObject.spec.?revoked.orValue(false)"
    return _policy(
        REQUEST_IMMUTABLE_POLICY,
        "accessrequests",
        ("UPDATE",),
        [
            _validation(
                unchanged,
                "'AccessRequest ' + object.metadata.name + ' refused: its spec is immutable except spec.revoked "
                "(create a new request to ask for something else)'",
                "AccessRequest refused: its spec is immutable except spec.revoked",
            ),
            _validation(
                f"{revoked} || !{was_revoked}",
                "'AccessRequest ' + object.metadata.name + ' refused: spec.revoked cannot be set back to false "
                "(create a new request)'",
                "AccessRequest refused: spec.revoked cannot be set back to false",
            ),
        ],
    )


def request_status_policy(operator_username: str) -> Obj:
    """accessrequests/status: only the operator writes it (an approval is judged against status.eligibility)."""
    return _policy(
        REQUEST_STATUS_POLICY,
        "accessrequests/status",
        ("UPDATE",),
        [
            _validation(
                f"{_USERNAME} == {_cel(operator_username)}",
                "'AccessRequest status is written by the access-hygiene operator only, not by ' + " + _USERNAME,
                "AccessRequest status is written by the access-hygiene operator only",
            )
        ],
    )


def approver_policy() -> Obj:
    """AccessApproval CREATE/UPDATE, no params: the approver is the caller; the spec never changes."""
    on_create = [
        {**v, "expression": f"request.operation != 'CREATE' || {v['expression']}"}
        for v in _identity_validations("AccessApproval", "approver", "approval", "approve")
    ]
    return _policy(
        APPROVER_POLICY,
        "accessapprovals",
        ("CREATE", "UPDATE"),
        [
            *on_create,
            _validation(
                "request.operation != 'UPDATE' || object.spec == oldObject.spec",
                "'AccessApproval ' + object.metadata.name + ' refused: an AccessApproval is immutable "
                "(it records who decided what); create a new one'",
                "AccessApproval refused: an AccessApproval is immutable",
            ),
        ],
    )


def approval_policy() -> Obj:
    """AccessApproval CREATE against the AccessRequest it names (status.eligibility, written by the operator).

    A self-approval, where the eligibility allows it and the operator judged the role low-risk, needs neither a
    listed approver nor `bind` on the role: self-service for a low-risk role is the point of allowing it."""
    other = "params.metadata.name != object.spec.request || "
    request = "' AccessRequest ' + params.metadata.name"
    eligibility = "params.status.eligibility"
    checked = f"{other}!has(params.status) || !has({eligibility}) || "
    approve = "object.spec.decision != 'Approve' || "
    role = f"{eligibility}.roleRef"
    role_resource = f"({role}.kind == 'ClusterRole' ? 'clusterroles' : 'roles')"
    may_bind = (
        f"authorizer.group({_cel(RBAC_GROUP)}).resource({role_resource}).namespace(object.metadata.namespace)"
        f".name({role}.name).check('bind').allowed()"
    )
    # Evaluated lazily, and only for the named request once it carries status.eligibility (after `checked`).
    own = "(object.spec.approver.username == params.spec.requester.username)"
    self_service = f"({own} && {eligibility}.?selfApproval.orValue(false))"
    listed = f"{eligibility}.?approvers.orValue([]).exists(a, {subject_is('a', 'object.spec.approver')})"
    approver = "object.spec.approver.username"
    return _policy(
        APPROVAL_POLICY,
        "accessapprovals",
        ("CREATE",),
        [
            _validation(
                other + f"has(params.status) && has({eligibility})",
                f"'AccessApproval refused:' + {request} + ' has not been checked by the operator yet "
                "(no status.eligibility); retry in a few seconds'",
                "AccessApproval refused: the AccessRequest has not been checked by the operator yet",
            ),
            _validation(
                checked + "params.status.?state.orValue('') == 'Pending'",
                f"'AccessApproval refused:' + {request} + ' is ' + params.status.?state.orValue('new') + "
                "', not Pending: it can no longer be decided'",
                "AccessApproval refused: the AccessRequest is not Pending",
            ),
            _validation(
                checked + f"{own} || {listed}",
                f"'AccessApproval refused: ' + {approver} + ' is not an approver of' + {request} + "
                "' (AccessEligibility ' + params.spec.eligibility + ')'",
                "AccessApproval refused: the caller is not an approver of the AccessRequest",
            ),
            _validation(
                checked + approve + f"!{own} || {self_service}",
                f"'AccessApproval refused: ' + {approver} + ' requested' + {request} + ' and may not approve it: "
                "self-approval is not allowed (AccessEligibility ' + params.spec.eligibility + ')'",
                "AccessApproval refused: the requester may not approve their own request",
            ),
            _validation(
                checked + approve + f"{self_service} || {may_bind}",
                f"'AccessApproval refused: ' + {approver} + ' may not bind ' + {role}.kind + ' ' + {role}.name + "
                "' in namespace ' + object.metadata.namespace + ' (an approver must hold what the request grants, "
                "or be allowed to bind it)'",
                "AccessApproval refused: the approver may not bind the role the request grants",
            ),
        ],
        param_kind="AccessRequest",
    )


def render_access_admission(operator_username: str) -> list[Obj]:
    """Every JIT admission policy, each followed by its binding (policies before bindings when applied)."""
    policies: list[tuple[Obj, bool]] = [
        (requester_policy(), False),
        (eligibility_policy(), True),
        (request_immutable_policy(), False),
        (request_status_policy(operator_username), False),
        (approver_policy(), False),
        (approval_policy(), True),
    ]
    objects: list[Obj] = []
    for policy, with_params in policies:
        objects += [policy, _binding(policy["metadata"]["name"], with_params=with_params)]
    return objects


def creator_stamp_policy(operator_username: str) -> list[Obj]:
    """A MutatingAdmissionPolicy (and its binding) that writes who created each Secret and RoleBinding into its
    accesshygiene.io/created-by annotation (request.userInfo.username, set by the API server) and keeps it as it
    was on every update (a stamp cannot be added, changed or removed afterwards). What attributes a just-in-time
    grant's leftovers to its requester (engine/access/leftovers.py). No clock, no param: one CEL evaluation per
    write of those kinds. failurePolicy Ignore: a stamp that fails leaves the object unattributed (reported, never
    removed) and never refuses a write cluster-wide. The operator's own writes are not stamped: its objects are
    never leftovers, and its reconciles stay free of a field it does not declare."""
    key = _cel(CREATED_BY_ANNOTATION)
    variables = [
        (
            "stamp",
            f"request.operation == 'CREATE' ? request.userInfo.username : "
            f"oldObject.metadata.?annotations[?{key}].orValue('')",
        ),
        ("current", f"object.metadata.?annotations[?{key}].orValue('')"),
        # JSON Pointer escaping ("/" is "~1") done here: jsonpatch.escapeKey is not declared in variables.
        ("path", _cel("/metadata/annotations/" + CREATED_BY_ANNOTATION.replace("~", "~0").replace("/", "~1"))),
    ]
    patch = (
        "variables.stamp == variables.current ? [] : "
        "variables.stamp == '' ? [JSONPatch{op: 'remove', path: variables.path}] : "
        "has(object.metadata.annotations) ? [JSONPatch{op: 'add', path: variables.path, value: variables.stamp}] : "
        # (spaced so that no "}}" appears: the chart template embeds this text)
        f"[JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{{key}: variables.stamp}} }}]"
    )
    rules = [("", "secrets"), (RBAC_GROUP, "rolebindings")]
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": CREATOR_STAMP_POLICY, "labels": _labels()},
        "spec": {
            "failurePolicy": "Ignore",
            "reinvocationPolicy": "Never",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["*"],
                        "resources": [resource],
                        "operations": ["CREATE", "UPDATE"],
                    }
                    for group, resource in rules
                ]
            },
            "matchConditions": [
                {"name": "not-the-operator", "expression": f"{_USERNAME} != {_cel(operator_username)}"}
            ],
            "variables": [{"name": n, "expression": e} for n, e in variables],
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": patch}}],
        },
    }
    binding = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": CREATOR_STAMP_POLICY, "labels": _labels()},
        "spec": {"policyName": CREATOR_STAMP_POLICY},
    }
    return [policy, binding]
