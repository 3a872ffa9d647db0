"""The rule runner: every registered rule over one snapshot, exemptions applied, in a stable order."""

import importlib
import pkgutil
from collections.abc import Collection

from access_hygiene.models.findings import Finding
from access_hygiene.reconcile import rules as rules_package
from access_hygiene.reconcile.exemptions import apply_exemptions
from access_hygiene.reconcile.rules import RULES, AuditContext, Rule
from access_hygiene.reconcile.snapshot import ClusterSnapshot

_loaded = False
# Attack-path findings (rules/attack_paths.py) sort before everything else.
ATTACK_PATH_RULES = frozenset({"AH-SA-011"})


def load_rules() -> dict[str, Rule]:
    """Import every module of access_hygiene.reconcile.rules so their @rule functions register."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(rules_package.__path__, f"{rules_package.__name__}."):
            importlib.import_module(module.name)
        _loaded = True
    return dict(sorted(RULES.items()))


def select_rules(only: Collection[str] | None) -> list[Rule]:
    """Rules whose id equals or starts with one of `only` (e.g. "AH-RBAC-009" or "AH-RBAC"); all when None."""
    catalogue = load_rules()
    if only is None:
        return list(catalogue.values())
    wanted = [item.strip().upper() for item in only if item.strip()]
    unknown = [w for w in wanted if not any(rule_id.startswith(w) for rule_id in catalogue)]
    if unknown:
        raise ValueError(f"unknown rule id(s): {', '.join(unknown)}")
    return [r for rule_id, r in catalogue.items() if any(rule_id.startswith(w) for w in wanted)]


def sort_key(finding: Finding) -> tuple[int, int, str, str, str, str, str, str]:
    """Attack paths first (what a person triaging needs first), then by severity, rule, object, subject."""
    subject = str(finding.subject) if finding.subject else ""
    obj = finding.object
    path = 0 if finding.rule_id in ATTACK_PATH_RULES else 1
    return (path, -finding.severity.rank, finding.rule_id, finding.namespace, obj.kind, obj.name, subject,
            finding.message)  # fmt: skip


def run_audit(snapshot: ClusterSnapshot, ctx: AuditContext, only: Collection[str] | None = None) -> list[Finding]:
    """All (or the selected) rules' findings, de-duplicated by Finding.key, exemptions applied, sorted
    attack paths first, then by severity (highest first), rule id, namespace, object and subject."""
    selected = select_rules(only)
    findings: dict[tuple[str, str, str, str, str], Finding] = {}
    for selected_rule in selected:
        for finding in selected_rule.check(snapshot, ctx):
            findings.setdefault(finding.key, finding)
    exempted = apply_exemptions(sorted(findings.values(), key=sort_key), snapshot, ctx)
    if only is not None:  # exemption bookkeeping (AH-GOV-002) is reported only when selected
        ids = {r.rule_id for r in selected}
        exempted = [f for f in exempted if f.rule_id in ids]
    return sorted(exempted, key=sort_key)
