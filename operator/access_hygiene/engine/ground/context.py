"""The AuditContext: what the rules need besides the objects (settings-derived knobs) and the
per-audit cache of shared, lazily built views."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

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
