"""The rule registry: @rule registers a check under a stable id; severity_for raises a
rule's severity in privileged namespaces."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.models.findings import Finding, Severity

RuleFunc = Callable[[ClusterSnapshot, AuditContext], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    rule_id: str
    severity: Severity
    title: str
    description: str
    check: RuleFunc


RULES: dict[str, Rule] = {}


def rule(rule_id: str, severity: Severity, title: str, description: str = "") -> Callable[[RuleFunc], RuleFunc]:
    """Register a rule under a stable id (AH-RBAC-NNN, AH-SA-NNN, AH-NET-NNN, AH-POD-NNN, AH-GOV-NNN)."""

    def register(func: RuleFunc) -> RuleFunc:
        if rule_id in RULES:
            raise ValueError(f"rule {rule_id} registered twice")
        RULES[rule_id] = Rule(rule_id, severity, title, description or (func.__doc__ or "").strip(), func)
        return func

    return register


def severity_for(rule_id: str, namespace: str, ctx: AuditContext) -> Severity:
    """The rule's severity, one step higher in privileged namespaces."""
    base = RULES[rule_id].severity
    return base.raised() if namespace in ctx.privileged_namespaces else base
