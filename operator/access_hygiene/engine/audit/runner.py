"""The rule runner: every registered rule over one snapshot, exemptions applied, in a stable order."""

import importlib
import pkgutil
from collections.abc import Collection

from access_hygiene.engine import catalogue
from access_hygiene.engine.catalogue.registry import RULES, Rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import bookkeeping_findings, mark_exempted
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.models.findings import Finding, Severity, Subject

_loaded = False
# Attack-path findings (catalogue/attack_paths.py) sort before everything else.
ATTACK_PATH_RULES = frozenset({"AH-SA-011"})


def load_rules() -> dict[str, Rule]:
    """Import every module of access_hygiene.engine.catalogue so their @rule functions register."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(catalogue.__path__, f"{catalogue.__name__}."):
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


SortKey = tuple[int, int, str, str, str, str, str, str]


def sort_key(finding: Finding) -> SortKey:
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
    # Finding.key and sort_key() of each finding, computed once: rules share Subject objects between findings,
    # so each subject's text is computed once too.
    subject_texts: dict[int, tuple[Subject, str]] = {}  # id -> (the subject, kept alive for its id; its text)
    ranks = {severity: -severity.rank for severity in Severity}
    findings: dict[tuple[str, str, str, str, str], tuple[SortKey, Finding]] = {}
    for selected_rule in selected:
        for finding in selected_rule.check(snapshot, ctx):
            subject = finding.subject
            if subject is None:
                text = ""
            else:
                known = subject_texts.get(id(subject))
                if known is None or known[0] is not subject:
                    known = subject_texts[id(subject)] = (subject, str(subject))
                text = known[1]
            obj, rule_id, namespace = finding.object, finding.rule_id, finding.namespace
            key = (rule_id, namespace, obj.kind, obj.name, text)
            if key not in findings:
                path = 0 if rule_id in ATTACK_PATH_RULES else 1
                order = (path, ranks[finding.severity], rule_id, namespace, obj.kind, obj.name, text, finding.message)
                findings[key] = (order, finding)
    ordered = list(findings.values())
    marked = mark_exempted([finding for _, finding in ordered], snapshot, ctx)
    # exemptions change neither the key nor the sort key of a finding
    keyed = [(order, finding) for (order, _), finding in zip(ordered, marked, strict=True)]
    keyed.extend((sort_key(f), f) for f in bookkeeping_findings(snapshot, ctx) if f.key not in findings)
    if only is not None:  # exemption bookkeeping (AH-GOV-002) is reported only when selected
        ids = {r.rule_id for r in selected}
        keyed = [item for item in keyed if item[1].rule_id in ids]
    keyed.sort(key=_first)
    return [finding for _, finding in keyed]


def _first(item: tuple[SortKey, Finding]) -> SortKey:
    return item[0]
