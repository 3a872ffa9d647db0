"""Just-in-time access: AccessEligibility, AccessRequest, AccessApproval (source of their CRDs, see models/crd.py).

An eligibility says who may request which role in which namespaces for how long, and who approves; a request
asks for it (in the namespace where access is wanted); an approval decides. The operator grants a RoleBinding
for the approved window only (engine/access/). Durations are Go-style strings ("30m", "1h30m"), the form CEL's
duration() reads, so admission can compare them without the operator.
"""

import re
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from access_hygiene.clock import parse_instant
from access_hygiene.models.base import WireModel
from access_hygiene.models.policy import DNS_LABEL, DNS_SUBDOMAIN
from access_hygiene.models.status import Condition

# The longest window any eligibility may allow: a week. Longer is a standing privilege by another name.
MAX_DURATION = timedelta(hours=168)
MAX_DURATION_TEXT = "168h"
# Go duration units CEL's duration() accepts that make sense for access windows.
_DURATION_UNITS = {"h": 3600, "m": 60, "s": 1}
DURATION_PATTERN = r"^([0-9]{1,6}(h|m|s))+$"
_DURATION_PART = re.compile(r"([0-9]+)(h|m|s)")
# CEL: the same bounds the pydantic validator applies, evaluated by the API server on write.
_DURATION_CEL = [
    {"rule": "duration(self) > duration('0s')", "message": "duration must be greater than 0s"},
    {
        "rule": f"duration(self) <= duration('{MAX_DURATION_TEXT}')",
        "message": f"duration must be at most {MAX_DURATION_TEXT} (7 days)",
    },
]

SubjectKind = Literal["User", "Group", "ServiceAccount"]
Decision = Literal["Approve", "Deny"]
# Pending: waiting for an approval. Approved: approved, startAt not reached. Active: the binding exists.
# Expired: the window ended. Revoked: ended early (spec.revoked, eligibility withdrawn, ceiling).
# Denied: never granted (a Deny decision, outside the eligibility, invalid input).
AccessState = Literal["Pending", "Approved", "Active", "Expired", "Revoked", "Denied"]
TERMINAL_STATES: frozenset[str] = frozenset({"Expired", "Revoked", "Denied"})

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
UserName = Annotated[str, Field(min_length=1, max_length=253)]
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# Stamped by admission (a MutatingAdmissionPolicy, render/access_admission.py) on every Secret and RoleBinding
# created: the username of whoever created it, kept unchanged on update. What attributes a grant's leftovers.
CREATED_BY_ANNOTATION = "accesshygiene.io/created-by"


def parse_duration(text: str) -> timedelta:
    """A Go-style duration ("90m", "1h30m", "45s") as a timedelta. Raises ValueError naming the accepted form;
    the sign and range are checked by the callers (DurationText), so "0s" parses to zero."""
    value = text.strip()
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{text!r} is not a duration: use hours, minutes and seconds such as 30m, 1h30m or 45s")
    return timedelta(seconds=sum(int(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(value)))


def check_duration(text: str) -> str:
    """The field validator behind every duration: Go form, > 0, at most MAX_DURATION."""
    window = parse_duration(text)
    if window <= timedelta(0):
        raise ValueError(f"duration {text!r} must be greater than 0s")
    if window > MAX_DURATION:
        raise ValueError(f"duration {text!r} is longer than the maximum {MAX_DURATION_TEXT} (7 days)")
    return text


DurationText = Annotated[
    str,
    Field(
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        json_schema_extra={"x-kubernetes-validations": _DURATION_CEL},
    ),
]


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def split_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount's username, None for any other user."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    return (namespace, name) if namespace and name and ":" not in name else None


class Subject(WireModel):
    """Who: a user, a group, or a ServiceAccount (with its namespace), as in an RBAC binding."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.kind != 'ServiceAccount' || has(self.__namespace__)",
                    "message": "a ServiceAccount subject needs its namespace",
                },
                {
                    "rule": "self.kind == 'ServiceAccount' || !has(self.__namespace__)",
                    "message": "only a ServiceAccount subject has a namespace",
                },
            ]
        }
    )

    kind: SubjectKind
    name: UserName
    namespace: NamespaceName | None = None

    @model_validator(mode="after")
    def _check_namespace(self) -> "Subject":
        if self.kind == "ServiceAccount" and not self.namespace:
            raise ValueError(f"ServiceAccount subject {self.name!r} needs its namespace")
        if self.kind != "ServiceAccount" and self.namespace:
            raise ValueError(f"only a ServiceAccount subject has a namespace ({self.kind} {self.name!r} has one)")
        return self

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


class Identity(WireModel):
    """A person or ServiceAccount as the API server authenticated them: the username (a ServiceAccount's is
    system:serviceaccount:<namespace>:<name>) and the groups that count for eligibility. Admission holds both
    to the creating request's userInfo (username equal, groups a subset)."""

    username: UserName
    groups: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(default_factory=list, max_length=64)


class RoleRef(WireModel):
    """The role a grant binds: a ClusterRole (bound in the request's namespace only) or a Role of that
    namespace (it must exist there)."""

    kind: Literal["ClusterRole", "Role"]
    name: ObjectName

    def describe(self) -> str:
        return f"{self.kind}/{self.name}"


class AccessEligibilitySpec(WireModel):
    """Who may request which role, in which namespaces, for how long, and who approves."""

    subjects: list[Subject] = Field(min_length=1, max_length=64, description="Who may request.")
    role_ref: RoleRef = Field(description="What is granted, as a RoleBinding in the request's namespace.")
    namespaces: list[NamespaceName] = Field(
        min_length=1, max_length=64, description="Where it may be granted (names; no wildcard)."
    )
    max_duration: DurationText = Field(description="The longest window a request may ask for (at most 168h).")
    approvers: list[Subject] = Field(
        default_factory=list, max_length=64, description="Who may approve. Empty: only self-approval, if allowed."
    )
    self_approval: bool = Field(
        default=False,
        description="Requesters may approve their own request; honoured only when the role is low-risk "
        "(read-only, nothing sensitive); status.selfApproval says whether it is.",
    )

    @field_validator("max_duration")
    @classmethod
    def _check_max_duration(cls, value: str) -> str:
        return check_duration(value)

    @model_validator(mode="after")
    def _check_someone_approves(self) -> "AccessEligibilitySpec":
        if not self.approvers and not self.self_approval:
            raise ValueError("nobody can approve: list approvers or allow selfApproval")
        return self


class SelfApproval(WireModel):
    allowed: bool
    reason: str = ""


class AccessEligibilityStatus(WireModel):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    self_approval: SelfApproval | None = Field(
        default=None, description="Whether self-approval is honoured for this role, and why not."
    )


class AccessRequestSpec(WireModel):
    """A request for the eligibility's role in this namespace, for `duration` from approval (or startAt)."""

    eligibility: ObjectName = Field(description="The AccessEligibility asked under.")
    requester: Identity = Field(description="Who asks: must be the identity creating the request (admission).")
    duration: DurationText = Field(description="How long, at most the eligibility's maxDuration.")
    start_at: Annotated[str, Field(max_length=64)] | None = Field(
        default=None,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 start; default: when approved. A start before the approval counts from approval.",
    )
    reason: Annotated[str, Field(min_length=1, max_length=1024)] = Field(description="Why access is needed.")
    revoked: bool = Field(default=False, description="Set to true to end the access now (manual revoke).")

    @field_validator("duration")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        return check_duration(value)

    @field_validator("start_at")
    @classmethod
    def _check_start(cls, value: str | None) -> str | None:
        if value is not None:
            parse_instant(value)
        return value


class LeftoverRef(WireModel):
    """An object created inside the grant's window that outlives it (rule AH-GOV-005). This list is the grant's
    record: in enforce mode only an object listed here, with this uid and created by the requester (createdBy,
    stamped by admission), is ever removed."""

    kind: str
    name: str
    created_at: str
    detail: str = ""
    uid: str = Field(default="", max_length=64)
    created_by: str = Field(
        default="",
        max_length=253,
        description=f"Who created it, as the API server authenticated them (the {CREATED_BY_ANNOTATION} annotation "
        "admission stamps; empty: created before the stamp existed, never removed).",
    )
    removed_at: str = Field(default="", description="When the operator removed it (enforce mode).")


class ResolvedEligibility(WireModel):
    """The operator's resolution of a request's eligibility, written on the request: what admission judges an
    AccessApproval against (its policy sees the request, not the eligibility; render/access_admission.py)."""

    role_ref: RoleRef
    approvers: list[Subject] = Field(default_factory=list, max_length=64)
    self_approval: bool = Field(
        default=False, description="Effective: the eligibility allows it and the role is low-risk."
    )


class AccessRequestStatus(WireModel):
    observed_generation: int = 0
    state: AccessState | None = None
    eligibility: ResolvedEligibility | None = Field(
        default=None, description="The eligibility as the operator resolved it (absent: not checked yet)."
    )
    role: str = Field(default="", max_length=300, description="Kind/name of the granted role (from the eligibility).")
    approved_by: str = Field(default="", max_length=253)
    approved_at: str = ""
    started_at: str = ""
    expires_at: str = ""
    ended_at: str = Field(default="", description="When the access ended: expiry, revocation or denial.")
    bindings: list[str] = Field(default_factory=list, max_length=8)
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    leftovers: list[LeftoverRef] | None = Field(
        default=None,
        max_length=20,
        description="After the window: objects created inside it that outlive it (AH-GOV-005), oldest first.",
    )


class AccessApprovalSpec(WireModel):
    """A decision on one AccessRequest of this namespace. Immutable (admission)."""

    request: ObjectName = Field(description="The AccessRequest decided on.")
    approver: Identity = Field(description="Who decides: must be the identity creating the approval (admission).")
    decision: Decision
    comment: Annotated[str, Field(max_length=1024)] | None = None


class AccessApprovalStatus(WireModel):
    observed_generation: int = 0
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
