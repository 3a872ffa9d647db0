"""The rule catalogue. Each rule id lives in a small function registered with @rule.

A rule reads a ClusterSnapshot (plus the AuditContext: settings-derived knobs and shared,
precomputed views such as effective permissions) and yields Findings. Rules never do I/O.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from access_hygiene.models.findings import Finding, Severity
from access_hygiene.reconcile.snapshot import ClusterSnapshot

DEFAULT_EXCLUDED_SUBJECT_PREFIXES = ("system:kube-", "system:node", "system:serviceaccount:kube-system:")


@dataclass(frozen=True)
class AuditContext:
    """Inputs the rules need besides the objects. Built from settings by the caller."""

    now: datetime  # from the caller's Clock: rules never read the system clock
    privileged_namespaces: frozenset[str] = frozenset({"kube-system"})
    exempt_namespaces: frozenset[str] = frozenset({"kube-system", "kube-public", "kube-node-lease"})
    # Namespaces carrying all these labels are exempt too (operator configuration).
    exempt_namespace_selector: tuple[tuple[str, str], ...] = ()
    # Subjects ignored by RBAC rules: "system:" users/groups built into Kubernetes, overridable.
    excluded_subject_prefixes: tuple[str, ...] = DEFAULT_EXCLUDED_SUBJECT_PREFIXES
    dns_namespace: str = "kube-system"
    dns_pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)
    # Shared, lazily built views (e.g. the effective permission index) keyed by name.
    cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


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
