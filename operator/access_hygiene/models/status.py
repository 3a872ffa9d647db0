"""AccessPolicy status: conditions with observedGeneration, generated objects, planned changes."""

from typing import Literal

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


class AccessPolicyStatus(WireModel):
    observed_generation: int = 0
    mode: str = ""
    service_account: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    generated: list[GeneratedRef] = Field(default_factory=list)
    planned_changes: list[PlannedChange] = Field(default_factory=list)
    violations: int = 0
