"""AccessPolicy status: conditions with observedGeneration, generated objects, planned changes, unused rules."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from access_hygiene.models.base import WireModel

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(WireModel):
    type: str
    status: ConditionStatus
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    observed_generation: int = 0
    last_transition_time: str = ""


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
    """A condition whose lastTransitionTime only moves when its status changes (AccessPolicy and the
    just-in-time access kinds alike)."""
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


class GeneratedRef(WireModel):
    api_version: str
    kind: str
    name: str
    namespace: str = ""


class PlannedChange(WireModel):
    action: Literal["apply", "prune", "conflict"]
    kind: str
    name: str
    namespace: str = ""
    detail: str = ""


# status.unusedRules lists at most this many entries (most specific first; see engine/usage/judgement.py).
MAX_UNUSED_RULES = 50


class RbacRef(WireModel):
    kind: str
    name: str
    namespace: str = ""


class UnusedRule(WireModel):
    """Verbs on resources (or a URL) one binding grants the ServiceAccount that no observed request used."""

    verbs: list[str]
    api_group: str = ""
    resources: list[str] = Field(default_factory=list)
    resource_names: list[str] = Field(default_factory=list)
    non_resource_url: str = ""
    binding: RbacRef
    role: RbacRef


class AccessPolicyStatus(WireModel):
    observed_generation: int = 0
    mode: str = ""
    service_account: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    generated: list[GeneratedRef] = Field(default_factory=list)
    planned_changes: list[PlannedChange] = Field(default_factory=list)
    violations: int = 0
    # Continuous mode (audit webhook, opt-in): absent until the ServiceAccount was observed long enough;
    # [] when everything it is granted was used. Written by k8s/usage_monitor.py, never by the policy sync.
    unused_rules: list[UnusedRule] | None = Field(
        default=None,
        max_length=MAX_UNUSED_RULES,
        description="Granted permissions the ServiceAccount did not use while observed through the audit webhook "
        "(continuous mode); absent until it was observed for the minimum window.",
    )
