"""Pure construction of AccessPolicy status: conditions keep lastTransitionTime unless status flips."""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from access_hygiene.models.findings import Finding
from access_hygiene.models.status import AccessPolicyStatus, Condition, ConditionStatus


def set_condition(
    previous: Sequence[Mapping[str, Any]],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> Condition:
    """A condition whose lastTransitionTime only moves when its status changes."""
    old = next((c for c in previous if c.get("type") == type_), None)
    since = now
    if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )


def status_to_wire(status: AccessPolicyStatus) -> dict[str, Any]:
    # Unset optional fields (unusedRules, owned by the continuous-mode writer) stay out of the patch.
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing desired would change anything (kopf bookkeeping keys are ignored)."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())


def count_policy_findings(findings: Iterable[Finding], namespace: str, service_account: str) -> int:
    """Non-exempt findings about the policy's ServiceAccount (the Violations printer column)."""
    return sum(
        1
        for finding in findings
        if not finding.exempted
        and (
            (
                finding.subject is not None
                and finding.subject.kind == "ServiceAccount"
                and (finding.subject.namespace, finding.subject.name) == (namespace, service_account)
            )
            or (
                finding.object.kind == "ServiceAccount"
                and (finding.namespace, finding.object.name) == (namespace, service_account)
            )
        )
    )
