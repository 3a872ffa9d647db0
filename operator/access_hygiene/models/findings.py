"""Findings: what the audit rules report. Shared by the operator, the CLI and the metrics."""

import sys
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def raised(self) -> "Severity":
        """One step more severe (used in privileged namespaces)."""
        order = list(Severity)
        return order[min(self.rank + 1, len(order) - 1)]


_SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class ObjectRef(BaseModel):
    """A Kubernetes object a finding is about. Empty namespace means cluster-scoped."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    namespace: str = ""
    api_version: str = ""

    @classmethod
    def trusted(cls, kind: str, name: str, namespace: str, api_version: str) -> "ObjectRef":
        """ObjectRef(kind=..., name=..., namespace=..., api_version=...) for strings the caller already has
        (see Finding.trusted): the same model, without validation."""
        values = {"kind": kind, "name": name, "namespace": namespace, "api_version": api_version}
        return _built(cls, values, _REF_FIELDS)


class Subject(BaseModel):
    """An RBAC subject (User, Group or ServiceAccount)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    namespace: str = ""

    @classmethod
    def trusted(cls, kind: str, name: str, namespace: str | None = None) -> "Subject":
        """Subject(kind=..., name=...[, namespace=...]) for strings the caller already has (see
        Finding.trusted): the same model, without validation."""
        if namespace is None:
            return _built(cls, {"kind": kind, "name": name, "namespace": ""}, _USER_FIELDS)
        return _built(cls, {"kind": kind, "name": name, "namespace": namespace}, _ACCOUNT_FIELDS)

    def __str__(self) -> str:
        if self.kind == "ServiceAccount":
            return f"system:serviceaccount:{self.namespace}:{self.name}"
        return f"{self.kind}:{self.name}"


class Finding(BaseModel):
    """One violation of one rule by one object (and, for RBAC rules, one subject)."""

    model_config = ConfigDict(frozen=True)

    rule_id: str
    severity: Severity
    namespace: str  # where the violation lives; "" for cluster scope
    object: ObjectRef
    message: str
    subject: Subject | None = None
    exempted: bool = False
    exemption_reason: str = ""

    @classmethod
    def trusted(
        cls, rule_id: str, severity: Severity, namespace: str, object: ObjectRef, message: str, subject: Subject | None
    ) -> "Finding":
        """The Finding Finding(rule_id=..., severity=..., namespace=..., object=..., subject=..., message=...)
        builds, without validating values the rules built from typed objects (the audit makes tens of
        thousands): the same fields and field set, so equality, hashing and serialisation are unchanged.
        Callers pass exactly these types; anything read from input goes through Finding(...).
        The message is interned: rules word many findings alike (half of them repeat one another's), and the
        operator holds ~43,000 findings."""
        values = {"rule_id": rule_id, "severity": severity, "namespace": namespace, "object": object,
                  "message": sys.intern(message), "subject": subject, "exempted": False,
                  "exemption_reason": ""}  # fmt: skip
        return _built(cls, values, _TRUSTED_FIELDS)

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity used to de-duplicate findings across scans."""
        # Interned: keys are kept (the Events' announced set holds one per finding), and one subject has many.
        subject = sys.intern(str(self.subject)) if self.subject else ""
        return (self.rule_id, self.namespace, self.object.kind, self.object.name, subject)


_set = object.__setattr__
# The explicitly given fields of trusted instances: one set per shape, shared by every instance of it (a set per
# instance was 470 bytes of a finding's ~1,200). Safe because pydantic changes a model's fields set only in
# __setattr__ (refused: the models are frozen) and in model_copy(update=...), which copies it first; nothing here
# changes one in place (tests/unit/test_findings_memory.py).
_TRUSTED_FIELDS = {"rule_id", "severity", "namespace", "object", "message", "subject"}
_REF_FIELDS = {"kind", "name", "namespace", "api_version"}
_M = TypeVar("_M", bound=BaseModel)
_USER_FIELDS = {"kind", "name"}
_ACCOUNT_FIELDS = {"kind", "name", "namespace"}


def _built(cls: type[_M], values: dict[str, Any], fields_set: set[str]) -> _M:
    """An instance of the model with these field values (every field, in declaration order) and this set of
    explicitly given fields (shared, never changed: see _TRUSTED_FIELDS): what pydantic's model_construct()
    builds, without its per-field defaults pass."""
    instance = cls.__new__(cls)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", fields_set)
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


class SubjectCapability(BaseModel):
    """A coarse, low-cardinality capability a ServiceAccount effectively holds (for metrics).

    capability is one of: cluster-admin, secrets-read, exec, escalate, bind, impersonate,
    nodes-proxy, create-pods, token-create, webhook-write, wildcard.
    """

    model_config = ConfigDict(frozen=True)

    namespace: str  # the ServiceAccount's namespace
    service_account: str
    capability: str
