"""`access-hygiene scan` (and `rules`): run the rule catalogue over a live cluster or manifest files.

Exit codes: 0 no finding at or above --fail-on (or --fail-on none), 1 at least one non-exempt finding
at or above --fail-on, 2 usage or input error (bad flags, unreadable/invalid files, cluster unreachable).
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from access_hygiene.cli.openreports_output import write_openreports
from access_hygiene.cli.output import (
    FORMATS,
    Locations,
    findings_json,
    findings_sarif,
    render_rules,
    render_rules_markdown,
    render_table,
    write_json,
)
from access_hygiene.models.findings import Finding, Severity
from access_hygiene.reconcile.rules import AuditContext
from access_hygiene.reconcile.snapshot import ClusterSnapshot, Obj, iter_flattened, name_of, namespace_of

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_EXCLUDED_PREFIXES = AuditContext().excluded_subject_prefixes


class InputError(Exception):
    """Input the scan cannot read (missing file, invalid YAML/JSON, unreachable cluster)."""


# --- input -------------------------------------------------------------------------------------------


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input (default: the live cluster of the current kubeconfig context)")
    group.add_argument(
        "-f", "--filename", action="append", default=[], metavar="PATH",
        help="manifest file or directory (recursive: *.yaml, *.yml, *.json), or - for stdin; repeatable. "
        "Multi-document YAML/JSON and `kubectl get -o yaml` List output are accepted",
    )  # fmt: skip
    group.add_argument("--kubeconfig", help="kubeconfig file for a live scan (default: $KUBECONFIG, ~/.kube/config)")
    group.add_argument("--context", help="kubeconfig context for a live scan")
    group.add_argument(
        "--include-secrets", action="store_true", help="live scan: also list Secret metadata (never their data)"
    )


def _manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
    if path.is_file():
        return [path]
    raise InputError(f"{path}: no such file or directory")


def _node_value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key and isinstance(value_node, yaml.Node):
                return value_node
    return None


def _scalar(node: yaml.Node | None) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else ""


def _object_lines(node: yaml.Node, source: str, locations: dict[tuple[str, str, str], tuple[str, int]]) -> None:
    """Record where each object (and each item of a List) starts, for SARIF physical locations."""
    items = _node_value(node, "items")
    if isinstance(items, yaml.SequenceNode):
        list_kind = _scalar(_node_value(node, "kind"))
        for item in items.value:
            if _node_value(item, "kind") is None and list_kind.endswith("List") and list_kind != "List":
                kind = list_kind[: -len("List")]
            else:
                kind = _scalar(_node_value(item, "kind"))
            _record(item, kind, source, locations)
        return
    _record(node, _scalar(_node_value(node, "kind")), source, locations)


def _record(node: yaml.Node, kind: str, source: str, locations: dict[tuple[str, str, str], tuple[str, int]]) -> None:
    metadata = _node_value(node, "metadata")
    key = (
        kind,
        _scalar(_node_value(metadata, "namespace")) if metadata else "",
        _scalar(_node_value(metadata, "name")),
    )
    locations.setdefault(key, (source, node.start_mark.line + 1))


def parse_manifests(
    text: str, source: str, locations: dict[tuple[str, str, str], tuple[str, int]], *, lenient: bool = False
) -> list[Obj]:
    """All objects of a (multi-document) YAML or JSON text; raises InputError with the position.
    lenient (files found in a directory): documents that are not Kubernetes objects are skipped."""
    try:
        documents = list(yaml.safe_load_all(text))
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is not None:
                _object_lines(node, source, locations)
    except yaml.YAMLError as error:
        raise InputError(f"{source}: invalid YAML/JSON: {error}") from None
    objects: list[Obj] = []
    for position, document in enumerate(documents, start=1):
        if document is None:
            continue
        if not isinstance(document, dict) or "kind" not in document:
            if lenient:
                continue
            raise InputError(f"{source}: document {position} is not a Kubernetes object (no `kind`)")
        objects.append(document)
    return objects


def load_files(paths: list[str]) -> tuple[ClusterSnapshot, Locations]:
    objects: list[Obj] = []
    locations: dict[tuple[str, str, str], tuple[str, int]] = {}
    for raw in paths:
        if raw == "-":
            objects += parse_manifests(sys.stdin.read(), "<stdin>", locations)
            continue
        for path in _manifest_files(Path(raw)):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise InputError(f"{path}: cannot read: {error}") from None
            objects += parse_manifests(text, path.as_posix(), locations, lenient=Path(raw).is_dir())
    flat = list(iter_flattened(objects))
    for obj in flat:
        if not isinstance(obj.get("metadata"), dict) or not name_of(obj):
            raise InputError(f"{obj.get('kind')} without metadata.name in the input")
    _default_namespaces(flat)
    return ClusterSnapshot.from_objects(flat), locations


def _default_namespaces(objects: list[Obj]) -> None:
    """Manifests often omit metadata.namespace (kubectl applies them to "default"); so does the scan."""
    for obj in objects:
        if obj.get("kind") in ("RoleBinding", "Role", "ServiceAccount", "Pod", "NetworkPolicy", "Secret",
                               "AccessPolicy", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob",
                               "ReplicaSet") and not namespace_of(obj):  # fmt: skip
            obj["metadata"]["namespace"] = "default"


@dataclasses.dataclass
class LoadedInput:
    snapshot: ClusterSnapshot
    locations: Locations
    source: str


def load_input(args: argparse.Namespace) -> LoadedInput:
    """The snapshot from -f files, or else from the live cluster (with a progress display on a TTY)."""
    if args.filename:
        snapshot, locations = load_files(args.filename)
        return LoadedInput(snapshot, locations, ", ".join(args.filename))
    return LoadedInput(_load_live(args), {}, f"context {args.context}" if args.context else "current context")


def _load_live(args: argparse.Namespace) -> ClusterSnapshot:
    # Imported lazily: file scans must work without the Kubernetes client stack.
    from access_hygiene.k8s.snapshot_loader import SnapshotLoadError, load_live_snapshot

    options = {"include_secrets": args.include_secrets}
    try:
        if not sys.stderr.isatty():
            return load_live_snapshot(args.kubeconfig, args.context, **options)
        columns = (SpinnerColumn(), TextColumn("Loading {task.fields[kind]}: {task.completed} objects"),
                   TimeElapsedColumn())  # fmt: skip
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("load", kind="cluster", total=None)
            totals: dict[str, int] = {}

            def report(kind: str, count: int) -> None:
                totals[kind] = count
                progress.update(task, kind=kind, completed=sum(totals.values()))

            return load_live_snapshot(args.kubeconfig, args.context, progress=report, **options)
    except SnapshotLoadError as error:
        raise InputError(str(error)) from None


# --- audit context -------------------------------------------------------------------------------------


def add_context_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = " ".join(DEFAULT_EXCLUDED_PREFIXES)
    parser.add_argument(
        "--exclude-subject-prefix", action="append", metavar="PREFIX",
        help=f"ignore subjects whose name starts with PREFIX (service accounts as system:serviceaccount:NS:NAME); "
        f"repeatable; replaces the default set: {defaults}",
    )  # fmt: skip
    parser.add_argument("--no-default-excludes", action="store_true", help="do not ignore any built-in system subject")
    parser.add_argument(
        "--privileged-namespace", action="append", default=[], metavar="NS",
        help="raise severities in NS (repeatable; added to: kube-system and the operator namespace)",
    )  # fmt: skip


def audit_context(args: argparse.Namespace) -> AuditContext:
    from access_hygiene.settings import OperatorSettings

    prefixes: tuple[str, ...] = DEFAULT_EXCLUDED_PREFIXES
    if args.no_default_excludes:
        prefixes = ()
    if args.exclude_subject_prefix:
        prefixes = tuple(p for p in args.exclude_subject_prefix if p)
    ctx = OperatorSettings().audit_context(excluded_subject_prefixes=prefixes)
    if args.privileged_namespace:
        ctx = dataclasses.replace(ctx, privileged_namespaces=ctx.privileged_namespaces | set(args.privileged_namespace))
    return ctx


# --- commands ---------------------------------------------------------------------------------------


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser(
        "scan",
        help="audit a live cluster or manifest files against the rule catalogue",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_input_arguments(parser)
    parser.add_argument("-o", "--output", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument(
        "--fail-on", choices=[*[s.value for s in Severity], "none"], default="none", metavar="SEVERITY",
        help="exit 1 when a non-exempt finding is at or above SEVERITY: low, medium, high, critical, none (default)",
    )  # fmt: skip
    parser.add_argument(
        "--rules", action="append", metavar="IDS",
        help="only these rule ids or prefixes, comma-separated (e.g. AH-RBAC-009,AH-NET); repeatable",
    )  # fmt: skip
    add_context_arguments(parser)
    parser.set_defaults(func=run)

    rules_parser = subparsers.add_parser("rules", help="list the rule catalogue (id, severity, title)")
    rules_parser.add_argument("-o", "--output", choices=("table", "json", "markdown"), default="table")
    rules_parser.add_argument("--prefix", default="", help="only rules whose id starts with this, e.g. AH-RBAC")
    rules_parser.set_defaults(func=run_rules)


def _selected(args: argparse.Namespace) -> list[str] | None:
    if not args.rules:
        return None
    return [item for value in args.rules for item in value.split(",") if item.strip()]


def fails(findings: list[Finding], threshold: str) -> bool:
    if threshold == "none":
        return False
    rank = Severity(threshold).rank
    return any(not f.exempted and f.severity.rank >= rank for f in findings)


def run(args: argparse.Namespace) -> int:
    from access_hygiene.reconcile.audit import load_rules, run_audit

    errors = Console(stderr=True)
    try:
        ctx = audit_context(args)
        loaded = load_input(args)
        findings = run_audit(loaded.snapshot, ctx, only=_selected(args))
    except (InputError, ValueError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        return EXIT_USAGE
    if args.output == "json":
        write_json(findings_json(findings), sys.stdout)
    elif args.output == "sarif":
        write_json(findings_sarif(findings, load_rules().values(), loaded.locations), sys.stdout)
    elif args.output == "openreports":
        write_openreports(findings, sys.stdout)
    else:
        render_table(findings, Console())
    return EXIT_FINDINGS if fails(findings, args.fail_on) else EXIT_OK


def run_rules(args: argparse.Namespace) -> int:
    from access_hygiene.reconcile.audit import load_rules

    rules = [r for r in load_rules().values() if r.rule_id.startswith(args.prefix)]
    if args.output == "markdown":
        sys.stdout.write(render_rules_markdown(rules))
    elif args.output == "json":
        write_json(
            [{"id": r.rule_id, "severity": r.severity.value, "title": r.title, "description": r.description}
             for r in rules],
            sys.stdout,
        )  # fmt: skip
    else:
        render_rules(rules, Console())
    return EXIT_OK
