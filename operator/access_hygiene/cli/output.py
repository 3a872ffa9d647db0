"""Rendering findings: a rich table for people, JSON for scripts, SARIF 2.1.0 for code-scanning tools."""

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from pydantic import TypeAdapter

from access_hygiene import __version__
from access_hygiene.engine.catalogue.registry import Rule
from access_hygiene.models.findings import Finding, Severity

if TYPE_CHECKING:  # rich is imported where a table or lines are rendered: `-o json/sarif` runs without it
    from rich.console import Console
    from rich.text import Text

FORMATS = ("table", "wide", "json", "sarif", "openreports")
# Below this many columns (or when stdout is not a terminal) the table becomes one line per finding.
MIN_TABLE_WIDTH = 100
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/access-hygiene/access-hygiene"
_SARIF_LEVEL = {Severity.CRITICAL: "error", Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
# GitHub code scanning maps this property to its own critical/high/medium/low buckets.
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.5", Severity.HIGH: "8.0", Severity.MEDIUM: "5.5", Severity.LOW: "3.0"}
_STYLE = {Severity.CRITICAL: "bold red", Severity.HIGH: "red", Severity.MEDIUM: "yellow", Severity.LOW: "cyan"}

_JSON: TypeAdapter[Any] = TypeAdapter(Any)

# (kind, namespace, name) -> (file path, 1-based line) for findings on objects read from files.
Locations = Mapping[tuple[str, str, str], tuple[str, int]]


def object_label(finding: Finding) -> str:
    obj = finding.object
    return f"{obj.kind}/{obj.namespace}/{obj.name}" if obj.namespace else f"{obj.kind}/{obj.name}"


def summarize(findings: Iterable[Finding]) -> dict[str, int]:
    counts = Counter(f.severity.value for f in findings if not f.exempted)
    return {severity.value: counts.get(severity.value, 0) for severity in reversed(Severity)}


def render_table(findings: list[Finding], console: "Console") -> None:
    """A rich table on a terminal at least MIN_TABLE_WIDTH wide; otherwise (a pipe, a file, a narrow
    terminal) one unwrapped line per finding: severity, rule, object, message."""
    from rich.table import Table

    if not findings:
        console.print("[green]No findings.[/green]")
        return
    if not console.is_terminal or console.width < MIN_TABLE_WIDTH:
        rows = [(_severity_cell(f), f.rule_id, object_label(f), _message(f)) for f in findings]
        _print_lines(console, rows, header=None)
        _print_summary(findings, console)
        return
    table = Table(show_lines=False, header_style="bold")
    for column in ("Severity", "Rule", "Object", "Subject", "Message"):
        table.add_column(column, overflow="fold")
    for finding in findings:
        table.add_row(
            _severity_markup(finding),
            finding.rule_id,
            object_label(finding),
            str(finding.subject) if finding.subject else "-",
            finding.message + (f" [dim](exempt: {finding.exemption_reason})[/dim]" if finding.exempted else ""),
        )
    console.print(table)
    _print_summary(findings, console)


def render_wide(findings: list[Finding], console: "Console") -> None:
    """Every field of every finding, one line each, aligned, never wrapped (whatever the terminal)."""
    if not findings:
        console.print("[green]No findings.[/green]")
        return
    rows = [
        (
            _severity_cell(f),
            f.rule_id,
            f.namespace or "-",
            object_label(f),
            str(f.subject) if f.subject else "-",
            f.message + (f" (exempt: {f.exemption_reason})" if f.exempted else ""),
        )
        for f in findings
    ]
    _print_lines(console, rows, header=("SEVERITY", "RULE", "NAMESPACE", "OBJECT", "SUBJECT", "MESSAGE"))
    _print_summary(findings, console)


def _severity_markup(finding: Finding) -> str:
    if finding.exempted:
        return f"[dim]{finding.severity.value} (exempt)[/dim]"
    return f"[{_STYLE[finding.severity]}]{finding.severity.value}[/]"


def _severity_cell(finding: Finding) -> "Text":
    from rich.text import Text

    if finding.exempted:
        return Text(f"{finding.severity.value} (exempt)", style="dim")
    return Text(finding.severity.value, style=_STYLE[finding.severity])


def _message(finding: Finding) -> str:
    return finding.message + (f" (exempt: {finding.exemption_reason})" if finding.exempted else "")


def _print_lines(console: "Console", rows: Sequence[Sequence["Text | str"]], header: Sequence[str] | None) -> None:
    """Rows as space-aligned columns (the last one not padded), without wrapping long lines. Off a terminal
    the text is written in one go (rich's per-line rendering would cost ~0.1 ms per finding)."""
    from rich.text import Text

    all_rows: list[Sequence[Text | str]] = [[Text(h, style="bold") for h in header]] if header else []
    all_rows += rows
    widths = [max(len(row[column]) for row in all_rows) for column in range(len(all_rows[0]) - 1)]
    if not console.is_terminal:
        lines = []
        for row in all_rows:
            cells = [cell.plain if isinstance(cell, Text) else cell for cell in row]
            padded = [cell.ljust(width + 2) for cell, width in zip(cells, widths, strict=False)]
            lines.append("".join(padded) + cells[-1])
        console.file.write("\n".join(lines) + "\n")
        return
    for row in all_rows:
        line = Text()
        for column, cell in enumerate(row):
            text = cell if isinstance(cell, Text) else Text(cell)
            if column < len(widths):
                text = text.copy()
                text.pad_right(widths[column] - len(text) + 2)
            line.append_text(text)
        console.print(line, soft_wrap=True, highlight=False)


def _print_summary(findings: list[Finding], console: "Console") -> None:
    counts = summarize(findings)
    exempt = sum(1 for f in findings if f.exempted)
    parts = [f"{count} {severity}" for severity, count in counts.items()]
    console.print(
        f"{sum(counts.values())} finding(s): " + ", ".join(parts) + (f"; {exempt} exempt" if exempt else ""),
        soft_wrap=True,
    )


def findings_json(findings: list[Finding], *, as_models: bool = False) -> dict[str, Any]:
    """The `-o json` document. as_models keeps the Finding models (write_json serialises them the same way,
    without a dict per finding in between)."""
    return {
        "findings": list(findings) if as_models else [f.model_dump(mode="json") for f in findings],
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


def write_json(data: Any, stream: IO[str], plain: Callable[[], Any] | None = None) -> None:
    """Indented JSON, as json.dumps(indent=2) prints it. Serialised by pydantic-core (the standard library's
    encoder is pure Python when indenting: 5x slower) and written as bytes when the stream has a buffer;
    non-ASCII text goes through json.dumps, which escapes it as \\uXXXX like before (on plain(), the same data
    as plain JSON values, when data holds pydantic models)."""
    encoded = _JSON.dump_json(data, indent=2)
    if not encoded.isascii():
        stream.write(json.dumps(plain() if plain else data, indent=2) + "\n")
        return
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(encoded.decode() + "\n")
        return
    stream.flush()
    buffer.write(encoded + b"\n")
    buffer.flush()


def render_rules(rules: Iterable[Rule], console: "Console") -> None:
    from rich.table import Table

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
