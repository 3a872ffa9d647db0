"""The just-in-time access state machine, pure.

Given an AccessRequest, its AccessEligibility, the AccessApprovals naming it, what the role would grant and
`now`, say what the request's state is, which RoleBinding should exist, when to look again, its status and
the Events of the transition. Every time comes from the objects (the approval's creationTimestamp, startAt,
duration) or from `now`, never from when the operator happened to look, so a restart derives the same answer.

    Pending --approve--> Approved --startAt--> Active --expiresAt--> Expired
       |                    |                    |
       +--deny/unfit--> Denied      revoked/unfit +--> Revoked

Expired, Revoked and Denied are final: an eligibility restored later does not revive a request.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from access_hygiene.clock import aware, parse_instant
from access_hygiene.engine.access.risk import ceiling_refusals, describe_refusals, self_approval_refusals
from access_hygiene.models.access import (
    TERMINAL_STATES,
    AccessApprovalSpec,
    AccessEligibilitySpec,
    AccessRequestSpec,
    AccessRequestStatus,
    AccessState,
    Identity,
    ResolvedEligibility,
    RoleRef,
    Subject,
    parse_duration,
    service_account_username,
)
from access_hygiene.models.status import Condition, ConditionStatus, set_condition
from access_hygiene.render.access import render_grant_binding

# (kind, name, namespace) -> the role's rules, None when it does not exist. Namespace is "" for a ClusterRole.
RoleLookup = Callable[[str, str, str], Sequence[Mapping[str, Any]] | None]
# A request naming an eligibility that does not exist is admitted (admission cannot tell, see
# docs/just-in-time-access.md) and denied by the operator once this long has passed since its creation without
# the eligibility appearing: an eligibility and a request applied together may reach the operator's watches in
# either order, and Denied is final.
ELIGIBILITY_GRACE = timedelta(seconds=10)


@dataclass(frozen=True)
class GrantLimits:
    """What the operator may grant at all: its ceiling ClusterRole's rules and the sensitive capabilities
    its configuration allows."""

    ceiling_rules: Sequence[Mapping[str, Any]]
    allowed_sensitive: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RoleVerdict:
    """Whether one role (in one namespace, for a Role) may be granted, and whether it is low-risk."""

    role: RoleRef
    namespace: str
    grantable: bool
    reason: str = ""  # condition reason when not grantable: RoleNotFound, GrantCeilingExceeded
    message: str = ""
    self_approval_allowed: bool = False
    self_approval_reason: str = ""


@dataclass(frozen=True)
class AccessEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class ApprovalVerdict:
    """Whether one AccessApproval counted, and why not (written to its status)."""

    name: str
    counted: bool
    reason: str
    message: str


@dataclass(frozen=True)
class RequestDecision:
    state: AccessState
    status: dict[str, Any]
    binding: dict[str, Any] | None  # the RoleBinding that should exist now, None: none should
    wake_at: datetime | None  # when the state changes by time alone (start or expiry)
    events: list[AccessEvent] = field(default_factory=list)
    approvals: list[ApprovalVerdict] = field(default_factory=list)

    @property
    def binding_name(self) -> str | None:
        return None if self.binding is None else str(self.binding["metadata"]["name"])


def format_time(moment: datetime) -> str:
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_instant(str(value))
    except ValueError:
        return None


def _seconds(span: timedelta) -> str:
    return f"{span.total_seconds():g}s"


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        parts.append(f"{where}: {item['msg']}" if where else str(item["msg"]))
    return "; ".join(parts)


def identity_matches(identity: Identity, subject: Subject) -> bool:
    if subject.kind == "User":
        return identity.username == subject.name
    if subject.kind == "Group":
        return subject.name in identity.groups
    return identity.username == service_account_username(subject.namespace or "", subject.name)


def _describe_subjects(subjects: Sequence[Subject]) -> str:
    shown = ", ".join(s.describe() for s in subjects[:5])
    return shown + (f" and {len(subjects) - 5} more" if len(subjects) > 5 else "")


def judge_role(role: RoleRef, namespace: str, lookup: RoleLookup, limits: GrantLimits) -> RoleVerdict:
    """Whether `role` may be bound in `namespace`: it exists (a Role in that namespace) and fits the ceiling."""
    role_namespace = namespace if role.kind == "Role" else ""
    rules = lookup(role.kind, role.name, role_namespace)
    if rules is None:
        where = f" in namespace {namespace}" if role.kind == "Role" else ""
        return RoleVerdict(role, namespace, False, "RoleNotFound", f"{role.describe()} does not exist{where}")
    refusals = ceiling_refusals(rules, limits.ceiling_rules, limits.allowed_sensitive)
    low_risk = self_approval_refusals(rules)
    self_reason = "" if not low_risk else f"{role.describe()} is not low-risk: {describe_refusals(low_risk)}"
    if refusals:
        message = f"{role.describe()} exceeds what the operator may grant: {describe_refusals(refusals)}"
        return RoleVerdict(role, namespace, False, "GrantCeilingExceeded", message, False, self_reason)
    return RoleVerdict(role, namespace, True, "", "", not low_risk, self_reason)


def _condition(
    previous: Sequence[Mapping[str, Any]],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> Condition:
    return set_condition(
        previous, type_=type_, status=status, reason=reason, message=message, generation=generation, now=now
    )


@dataclass
class _Outcome:
    """What the machine settled on, before it is turned into status, binding and events."""

    state: AccessState
    approved: tuple[ConditionStatus, str, str]
    active: tuple[ConditionStatus, str, str]
    role: str = ""
    approved_by: str = ""
    approved_at: datetime | None = None
    started_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    binding: dict[str, Any] | None = None
    wake_at: datetime | None = None
    approvals: list[ApprovalVerdict] = field(default_factory=list)
    # What admission judges approvals against (status.eligibility; render/access_admission.py).
    resolved: ResolvedEligibility | None = None


_TRANSITION_EVENTS: dict[str, tuple[Literal["Normal", "Warning"], str]] = {
    "Pending": ("Normal", "AccessRequested"),
    "Approved": ("Normal", "AccessApproved"),
    "Active": ("Normal", "AccessGranted"),
    "Expired": ("Normal", "AccessExpired"),
    "Revoked": ("Warning", "AccessRevoked"),
    "Denied": ("Warning", "AccessDenied"),
}


def _judge_approvals(
    approvals: Sequence[Mapping[str, Any]],
    *,
    request_name: str,
    request_created: datetime | None,
    requester: Identity,
    eligibility_name: str,
    eligibility: AccessEligibilitySpec,
    verdict: RoleVerdict,
) -> list[tuple[datetime, ApprovalVerdict, AccessApprovalSpec | None]]:
    judged: list[tuple[datetime, ApprovalVerdict, AccessApprovalSpec | None]] = []
    for approval in approvals:
        metadata = approval.get("metadata") or {}
        name = str(metadata.get("name") or "")
        created = _time(metadata.get("creationTimestamp")) or datetime.max.replace(tzinfo=UTC)
        try:
            spec = AccessApprovalSpec.model_validate(approval.get("spec") or {})
        except ValidationError as error:
            judged.append((created, ApprovalVerdict(name, False, "InvalidSpec", _validation_message(error)), None))
            continue
        if spec.request != request_name:
            continue
        who = spec.approver.username
        if request_created is not None and created < request_created:
            message = f"created at {format_time(created)}, before request {request_name} (an earlier request's)"
            judged.append((created, ApprovalVerdict(name, False, "PredatesRequest", message), None))
        elif who == requester.username and not (eligibility.self_approval and verdict.self_approval_allowed):
            why = (
                f"AccessEligibility {eligibility_name} does not allow self-approval"
                if not eligibility.self_approval
                else f"self-approval refused: {verdict.self_approval_reason}"
            )
            judged.append((created, ApprovalVerdict(name, False, "SelfApprovalNotAllowed", f"{who}: {why}"), None))
        elif who != requester.username and not any(identity_matches(spec.approver, s) for s in eligibility.approvers):
            message = (
                f"{who} is not an approver of AccessEligibility {eligibility_name} "
                f"(approvers: {_describe_subjects(eligibility.approvers) or 'none'})"
            )
            judged.append((created, ApprovalVerdict(name, False, "NotAnApprover", message), None))
        else:
            message = f"{spec.decision} by {who} counted"
            judged.append((created, ApprovalVerdict(name, True, "Counted", message), spec))
    judged.sort(key=lambda item: (item[0], item[1].name))
    return judged


def _unfit(
    request: AccessRequestSpec,
    namespace: str,
    eligibility_name: str,
    eligibility: AccessEligibilitySpec,
    verdict: RoleVerdict,
) -> tuple[str, str] | None:
    """(reason, message) when the request does not fit its eligibility (any more), None when it does."""
    requester = request.requester
    if not any(identity_matches(requester, subject) for subject in eligibility.subjects):
        return "NotEligible", (
            f"{requester.username} is not a subject of AccessEligibility {eligibility_name} "
            f"(subjects: {_describe_subjects(eligibility.subjects)})"
        )
    if namespace not in eligibility.namespaces:
        return "NamespaceNotEligible", (
            f"AccessEligibility {eligibility_name} does not grant in namespace {namespace} "
            f"(namespaces: {', '.join(eligibility.namespaces)})"
        )
    if parse_duration(request.duration) > parse_duration(eligibility.max_duration):
        return "DurationAboveMaximum", (
            f"duration {request.duration} is longer than AccessEligibility {eligibility_name}'s "
            f"maxDuration {eligibility.max_duration}"
        )
    if not verdict.grantable:
        return verdict.reason, verdict.message
    return None


def _decide(
    request_obj: Mapping[str, Any],
    eligibility_obj: Mapping[str, Any] | None,
    approvals: Sequence[Mapping[str, Any]],
    roles: RoleLookup,
    limits: GrantLimits,
    now: datetime,
) -> _Outcome:
    metadata = request_obj.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    previous = request_obj.get("status") or {}
    previous_state = previous.get("state")
    role_seen = str(previous.get("role") or "")

    def ended(state: AccessState, reason: str, message: str) -> _Outcome:
        was_granted = previous_state in ("Approved", "Active")
        old: Mapping[str, Any] = next((c for c in previous.get("conditions") or [] if c.get("type") == "Approved"), {})
        approved: tuple[ConditionStatus, str, str] = (
            ("True", "Approved", str(old.get("message") or "approved")) if was_granted else ("False", reason, message)
        )
        return _Outcome(
            state=state,
            approved=approved,
            active=("False", reason, message),
            role=role_seen,
            approved_by=str(previous.get("approvedBy") or ""),
            approved_at=_time(previous.get("approvedAt")),
            started_at=_time(previous.get("startedAt")) if previous_state == "Active" else None,
            expires_at=_time(previous.get("expiresAt")),
            ended_at=now,
        )

    try:
        spec = AccessRequestSpec.model_validate(request_obj.get("spec") or {})
    except ValidationError as error:
        return ended("Denied", "InvalidSpec", f"invalid request: {_validation_message(error)}")

    eligibility_name = spec.eligibility
    if eligibility_obj is None:
        if role_seen or previous_state in ("Approved", "Active"):
            withdrawn = f"AccessEligibility {eligibility_name} was deleted"
            return ended("Revoked" if previous_state in ("Approved", "Active") else "Denied", "EligibilityWithdrawn",
                         withdrawn)  # fmt: skip
        created = _time(metadata.get("creationTimestamp"))
        deny_at = None if created is None else created + ELIGIBILITY_GRACE
        if deny_at is None or now >= deny_at:
            missing = (
                f"AccessEligibility {eligibility_name} does not exist (still missing {_seconds(ELIGIBILITY_GRACE)} "
                "after the request was created): nothing grants this request; create a new one naming an existing "
                "AccessEligibility"
            )
            return ended("Denied", "EligibilityNotFound", missing)
        waiting = (
            f"AccessEligibility {eligibility_name} does not exist (yet); the request is denied at "
            f"{format_time(deny_at)} unless it appears"
        )
        return _Outcome("Pending", ("Unknown", "EligibilityNotFound", waiting), ("False", "NotApproved", waiting),
                        wake_at=deny_at)  # fmt: skip
    try:
        eligibility = AccessEligibilitySpec.model_validate(eligibility_obj.get("spec") or {})
    except ValidationError as error:
        invalid = f"AccessEligibility {eligibility_name} is invalid: {_validation_message(error)}"
        return ended("Revoked" if previous_state in ("Approved", "Active") else "Denied", "EligibilityInvalid", invalid)

    verdict = judge_role(eligibility.role_ref, namespace, roles, limits)
    role = eligibility.role_ref.describe()
    resolved = ResolvedEligibility(
        role_ref=eligibility.role_ref,
        approvers=eligibility.approvers,
        self_approval=eligibility.self_approval and verdict.self_approval_allowed,
    )
    grant_state = previous_state in ("Approved", "Active")
    if grant_state and role_seen and role_seen != role:
        changed = f"AccessEligibility {eligibility_name} now grants {role}, not {role_seen}"
        return ended("Revoked", "EligibilityChanged", changed)
    unfit = _unfit(spec, namespace, eligibility_name, eligibility, verdict)
    if unfit is not None:
        reason, message = unfit
        if grant_state:
            return ended("Revoked", reason, f"no longer eligible: {message}")
        return ended("Denied", reason, message)

    request_created = _time(metadata.get("creationTimestamp"))
    judged = _judge_approvals(
        approvals,
        request_name=name,
        request_created=request_created,
        requester=spec.requester,
        eligibility_name=eligibility_name,
        eligibility=eligibility,
        verdict=verdict,
    )
    verdicts = [v for _, v, _ in judged]
    decision = next(((created, s) for created, _, s in judged if s is not None), None)
    if spec.revoked:
        outcome = ended("Revoked", "RevokedManually", f"spec.revoked set: access to {role} withdrawn")
        outcome.role, outcome.approvals = role, verdicts
        return outcome
    if decision is None and grant_state:
        # The approval was deleted, or its approver is no longer one: the grant does not survive it.
        why = "; ".join(v.message for v in verdicts if not v.counted) or "the approval was deleted"
        outcome = ended("Revoked", "ApprovalWithdrawn", f"the approval no longer counts: {why}")
        outcome.role, outcome.approvals = role, verdicts
        return outcome
    if decision is None:
        who = _describe_subjects(eligibility.approvers) or "the requester (self-approval)"
        ignored = [v.message for v in verdicts if not v.counted]
        waiting = f"waiting for an approval from one of: {who}" + (
            f"; ignored: {'; '.join(ignored)}" if ignored else ""
        )
        return _Outcome("Pending", ("Unknown", "AwaitingApproval", waiting), ("False", "NotApproved", waiting), role,
                        approvals=verdicts, resolved=resolved)  # fmt: skip
    approved_at, approval = decision
    approver = approval.approver.username
    comment = f": {approval.comment}" if approval.comment else ""
    if approval.decision == "Deny":
        denied = f"denied by {approver} at {format_time(approved_at)}{comment}"
        outcome = ended("Denied", "ApprovalDenied", denied)
        outcome.role, outcome.approvals = role, verdicts
        return outcome

    start = max(approved_at, _time(spec.start_at) or approved_at)
    expires = start + parse_duration(spec.duration)
    approved: tuple[ConditionStatus, str, str] = (
        "True",
        "Approved",
        f"approved by {approver} at {format_time(approved_at)}{comment}",
    )
    common: dict[str, Any] = {"role": role, "approved_by": approver, "approved_at": approved_at, "approvals": verdicts,
                              "resolved": resolved}  # fmt: skip
    if now < start:
        scheduled = f"starts at {format_time(start)} (spec.startAt), ends at {format_time(expires)}"
        return _Outcome("Approved", approved, ("False", "Scheduled", scheduled), expires_at=expires, wake_at=start,
                        **common)  # fmt: skip
    if now >= expires:
        over = f"the window ended at {format_time(expires)} ({spec.duration} from {format_time(start)})"
        return _Outcome("Expired", approved, ("False", "Expired", over), started_at=start, expires_at=expires,
                        ended_at=expires, **common)  # fmt: skip
    binding = render_grant_binding(
        request_name=name,
        namespace=namespace,
        request_uid=str(metadata.get("uid") or ""),
        username=spec.requester.username,
        role=eligibility.role_ref,
        expires_at=format_time(expires),
    )
    granted = (
        f"RoleBinding {binding['metadata']['name']} binds {role} to {spec.requester.username} in {namespace} "
        f"until {format_time(expires)}"
    )
    return _Outcome("Active", approved, ("True", "Granted", granted), started_at=start, expires_at=expires,
                    binding=binding, wake_at=expires, **common)  # fmt: skip


def decide_request(
    request: Mapping[str, Any],
    eligibility: Mapping[str, Any] | None,
    approvals: Sequence[Mapping[str, Any]],
    roles: RoleLookup,
    limits: GrantLimits,
    now: datetime,
) -> RequestDecision:
    """The request's state at `now`, the binding it should have, its status and the Events of the change.

    A request already Expired, Revoked or Denied stays so; its status is kept (only observedGeneration moves).
    """
    metadata = request.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    previous = dict(request.get("status") or {})
    previous_state = previous.get("state")
    stamp = format_time(now)
    if previous_state in TERMINAL_STATES:
        kept = {**previous, "observedGeneration": generation}
        return RequestDecision(state=previous_state, status=kept, binding=None, wake_at=None)

    outcome = _decide(request, eligibility, approvals, roles, limits, aware(now))
    conditions = previous.get("conditions") or []
    status = AccessRequestStatus(
        observed_generation=generation,
        state=outcome.state,
        eligibility=outcome.resolved,
        role=outcome.role,
        approved_by=outcome.approved_by,
        approved_at=format_time(outcome.approved_at) if outcome.approved_at else "",
        started_at=format_time(outcome.started_at) if outcome.started_at else "",
        expires_at=format_time(outcome.expires_at) if outcome.expires_at else "",
        ended_at=format_time(outcome.ended_at) if outcome.ended_at else "",
        bindings=[str(outcome.binding["metadata"]["name"])] if outcome.binding else [],
        conditions=[
            _condition(conditions, "Approved", *outcome.approved, generation=generation, now=stamp),
            _condition(conditions, "Active", *outcome.active, generation=generation, now=stamp),
        ],
    )
    events = []
    if outcome.state != previous_state:
        event_type, reason = _TRANSITION_EVENTS[outcome.state]
        message = outcome.active[2] if outcome.state != "Approved" else f"{outcome.approved[2]}; {outcome.active[2]}"
        events.append(AccessEvent(event_type, reason, message))
    return RequestDecision(
        state=outcome.state,
        status=status.model_dump(by_alias=True, mode="json", exclude_none=True),
        binding=outcome.binding,
        wake_at=outcome.wake_at,
        events=events,
        approvals=outcome.approvals,
    )


def stale_bindings(decision: RequestDecision, existing: Sequence[str]) -> list[str]:
    """Names of the request's own bindings (found by its label) that should not exist."""
    return sorted(name for name in existing if name != decision.binding_name)


def eligibility_status(
    eligibility: Mapping[str, Any], roles: RoleLookup, limits: GrantLimits, now: datetime
) -> dict[str, Any]:
    """Ready (the role exists and fits the ceiling in every namespace) and whether self-approval is honoured."""
    metadata = eligibility.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    previous = (eligibility.get("status") or {}).get("conditions") or []
    stamp = format_time(now)
    try:
        spec = AccessEligibilitySpec.model_validate(eligibility.get("spec") or {})
    except ValidationError as error:
        ready = _condition(previous, "Ready", "False", "InvalidSpec", _validation_message(error), generation, stamp)
        return {"observedGeneration": generation, "conditions": [ready.model_dump(by_alias=True, mode="json")]}
    scopes = spec.namespaces if spec.role_ref.kind == "Role" else [""]
    verdicts = [judge_role(spec.role_ref, namespace, roles, limits) for namespace in scopes]
    refused = [v for v in verdicts if not v.grantable]
    if refused:
        reason = refused[0].reason
        message = "grants nothing: " + "; ".join(v.message for v in refused[:3])
        ready = _condition(previous, "Ready", "False", reason, message, generation, stamp)
    else:
        message = f"grants {spec.role_ref.describe()} in {', '.join(spec.namespaces)} for up to {spec.max_duration}"
        ready = _condition(previous, "Ready", "True", "Eligible", message, generation, stamp)
    self_refusal = next((v.self_approval_reason for v in verdicts if not v.self_approval_allowed), "")
    if not spec.self_approval:
        self_approval = {"allowed": False, "reason": "selfApproval is false"}
    elif refused:
        self_approval = {"allowed": False, "reason": "the role cannot be granted"}
    else:
        self_approval = {"allowed": not self_refusal, "reason": self_refusal}
    return {
        "observedGeneration": generation,
        "conditions": [ready.model_dump(by_alias=True, mode="json")],
        "selfApproval": self_approval,
    }


def revocation_due(expires_at: str, now: datetime) -> timedelta | None:
    """How long past its expiry a grant is at `now` (a binding's expires-at annotation), None if not yet."""
    moment = _time(expires_at)
    if moment is None or now < moment:
        return None
    return aware(now) - moment
