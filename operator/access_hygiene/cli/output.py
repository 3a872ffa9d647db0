"""Rendering findings: a rich table for people, JSON for scripts, SARIF 2.1.0 for code-scanning tools."""

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import IO, Any

from rich.console import Console
from rich.table import Table

from access_hygiene import __version__
from access_hygiene.models.findings import Finding, Severity
from access_hygiene.reconcile.rules import Rule

FORMATS = ("table", "json", "sarif", "openreports")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/access-hygiene/access-hygiene"
_SARIF_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
# GitHub code scanning maps this property to its own critical/high/medium/low buckets.
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "3.0"}
_STYLE = {Severity.CRITICAL: "bold red", Severity.HIGH: "red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan"}

# (kind, namespace, name) -> (file path, 1-based line) for findings on objects read from files.
Locations = Mapping[tuple[str, str, str], tuple[str, int]]


def object_label(finding: Finding) -> str:
    obj = finding.object
    return f"{obj.kind}/{obj.namespace}/{obj.name}" if obj.namespace else f"{obj.kind}/{obj.name}"


def summarize(findings: Iterable[Finding]) -> dict[str, int]:
    counts = Counter(f.severity.value for f in findings if not f.exempted)
    return {severity.value: counts.get(severity.value, 0) for severity in reversed(Severity)}


def render_table(findings: list[Finding], console: Console) -> None:
    if not findings:
        console.print("[green]No findings.[/green]")
        return
    table = Table(show_lines=False, header_style="bold")
    for column in ("Severity", "Rule", "Object", "Subject", "Message"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        severity = f"[{_STYLE[finding.severity]}]{finding.severity.value}[/]"
        if finding.exempted:
            severity = f"[dim]{finding.severity.value} (exempt)[/dim]"
        table.add_row(
            severity,
            finding.rule_id,
            object_label(finding),
            str(finding.subject) if finding.subject else "-",
            finding.message + (f" [dim](exempt: {finding.exemption_reason})[/dim]" if finding.exempted else ""),
        )
    console.print(table)
    counts = summarize(findings)
    exempt = sum(1 for f in findings if f.exempted)
    parts = [f"{count} {severity}" for severity, count in counts.items()]
    console.print(f"{sum(counts.values())} finding(s): " + ", ".join(parts) + (f"; {exempt} exempt" if exempt else ""))


def findings_json(findings: list[Finding]) -> dict[str, Any]:
    return {
        "findings": [f.model_dump(mode="json") for f in findings],
        "summary": summarize(findings),
        "exempted": sum(1 for f in findings if f.exempted),
    }


def findings_sarif(
    findings: list[Finding], rules: Iterable[Rule], locations: Locations | None = None
) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; exempt findings carry an external suppression."""
    catalogue = sorted(rules, key=lambda r: r.rule_id)
    rule_index = {r.rule_id: i for i, r in enumerate(catalogue)}
    sarif_rules = [
        {
            "id": r.rule_id,
            "name": "".join("".join(c for c in word if c.isalnum()).capitalize() for word in r.title.split()),
            "shortDescription": {"text": r.title},
            "fullDescription": {"text": r.description or r.title},
            "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
            "properties": {"security-severity": _SECURITY_SEVERITY[r.severity], "tags": ["security", "kubernetes"]},
        }
        for r in catalogue
    ]
    results = []
    for finding in findings:
        obj = finding.object
        location: dict[str, Any] = {
            "logicalLocations": [{"fullyQualifiedName": object_label(finding), "name": obj.name, "kind": "resource"}]
        }
        source = (locations or {}).get((obj.kind, obj.namespace, obj.name))
        if source is not None:
            path, line = source
            location["physicalLocation"] = {"artifactLocation": {"uri": path}, "region": {"startLine": line}}
        result: dict[str, Any] = {
            "ruleId": finding.rule_id,
            "level": _SARIF_LEVEL[finding.severity],
            "message": {"text": finding.message},
            "locations": [location],
            "partialFingerprints": {"accessHygiene/v1": "|".join(finding.key)},
            "properties": {"severity": finding.severity.value, "namespace": finding.namespace},
        }
        if finding.rule_id in rule_index:
            result["ruleIndex"] = rule_index[finding.rule_id]
        if finding.subject is not None:
            result["properties"]["subject"] = str(finding.subject)
        if finding.exempted:
            result["suppressions"] = [{"kind": "external", "justification": finding.exemption_reason or "exempted"}]
        results.append(result)
    driver = {"name": "access-hygiene", "version": __version__, "informationUri": INFORMATION_URI, "rules": sarif_rules}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{"tool": {"driver": driver}, "results": results}]}


def write_json(data: Any, stream: IO[str]) -> None:
    json.dump(data, stream, indent=2, sort_keys=False)
    stream.write("\n")


def render_rules(rules: Iterable[Rule], console: Console) -> None:
    table = Table(header_style="bold")
    for column in ("Rule", "Severity", "Title"):
        table.add_column(column, overflow="fold")
    for r in sorted(rules, key=lambda r: r.rule_id):
        table.add_row(r.rule_id, f"[{_STYLE[r.severity]}]{r.severity.value}[/]", r.title)
    console.print(table)


def render_rules_markdown(rules: Iterable[Rule]) -> str:
    """The catalogue as a Markdown reference page (docs/rbac-rules.md is generated with this)."""
    lines = [
        "# Rule catalogue: RBAC rules",
        "",
        "Generated by `access-hygiene rules --prefix AH-RBAC -o markdown`; do not edit by hand.",
        "Severities are raised one step in privileged namespaces. Built-in system subjects are excluded by",
        "a visible default set (`access-hygiene scan --help`), which `--exclude-subject-prefix` replaces.",
        "Exemptions use the `accesshygiene.io/exempt*` annotations described in [rules.md](rules.md).",
        "",
    ]
    for rule in sorted(rules, key=lambda r: r.rule_id):
        lines += [
            f"## {rule.rule_id} {rule.title}",
            "",
            f"- Severity: {rule.severity.value}",
            "",
            " ".join(rule.description.split()),
            "",
        ]
    return "\n".join(lines)
