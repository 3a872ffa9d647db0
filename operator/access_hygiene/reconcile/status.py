"""Pure construction of AccessPolicy status: conditions keep lastTransitionTime unless status flips."""

from collections.abc import Mapping, Sequence
from typing import Any

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
    return status.model_dump(by_alias=True, mode="json")


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing desired would change anything (kopf bookkeeping keys are ignored)."""
    current = current or {}
    return any(current.get(key) != value for key, value in desired.items())
