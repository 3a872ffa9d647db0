"""`access-hygiene scan` (and `rules`): run the rule catalogue over a live cluster or manifest files.

Exit codes: 0 no finding at or above --fail-on (or --fail-on none), 1 at least one non-exempt finding
at or above --fail-on, 2 usage or input error (bad flags, a missing path, an unreadable/invalid file named
with -f, input where nothing could be read, cluster unreachable).

Inside a directory given with -f, an invalid file is skipped with a warning; kinds the rules do not read are
ignored; objects they read that are malformed (no metadata.name, e.g. generateName manifests) are skipped
with a warning naming the file and document (and List item).
"""

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from access_hygiene.cli.manifest_reader import HAS_LIBYAML, LIBYAML_NOTICE, ManifestError, read_documents
from access_hygiene.cli.output import (
    FORMATS,
    Locations,
    findings_json,
    findings_sarif,
    render_rules,
    render_rules_markdown,
    render_table,
    render_wide,
    write_json,
)
from access_hygiene.clock import SYSTEM_CLOCK, Clock, FixedClock, parse_instant
from access_hygiene.engine.ground.context import DEFAULT_EXCLUDED_SUBJECT_PREFIXES, AuditContext
from access_hygiene.engine.ground.snapshot import (
    CLUSTER_SCOPED_KINDS,
    KIND_FIELDS,
    ClusterSnapshot,
    Obj,
    name_of,
    namespace_of,
)
from access_hygiene.models.findings import Finding, Severity

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_EXCLUDED_PREFIXES = DEFAULT_EXCLUDED_SUBJECT_PREFIXES


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


@dataclasses.dataclass
class FileInput:
    """What the files gave: the snapshot, where each object starts, and the problems met on the way."""

    snapshot: ClusterSnapshot = dataclasses.field(default_factory=ClusterSnapshot)
    locations: dict[tuple[str, str, str], tuple[str, int]] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    objects_read: int = 0
    ignored: int = 0  # objects of kinds the rules do not read
    positions: bool = True  # where objects start (for SARIF); without, a large JSON List reads leaner
    parse_seconds: tuple[float, float] = (0.0, 0.0)  # wall, CPU: reading text into documents
    snapshot_seconds: tuple[float, float] = (0.0, 0.0)  # wall, CPU: documents into snapshot objects

    def read_text(self, text: str, source: str, *, json_hint: bool = False, lenient: bool = False) -> None:
        """Add every object of one file's text. lenient (files found in a directory): an unparsable file and
        documents that are not Kubernetes objects are skipped (the former with a warning); otherwise an
        unparsable file raises InputError."""
        started = time.perf_counter(), time.process_time()
        try:
            documents = read_documents(text, json_hint=json_hint, positions=self.positions)
        except ManifestError as error:
            if lenient:
                self.warnings.append(f"{source}: skipped, {error}")
                return
            raise InputError(f"{source}: {error}") from None
        finally:
            parsed = time.perf_counter(), time.process_time()
            self.parse_seconds = _plus(self.parse_seconds, parsed, started)
        for document in documents:
            value = document.value
            if value is None:
                continue
            if not isinstance(value, dict) or "kind" not in value:
                if not lenient:
                    self.warnings.append(f"{source}: document {document.index} is not a Kubernetes object (no `kind`)")
                continue
            self._add(value, source, document.index, document.line, document.item_lines, "")
        self.snapshot_seconds = _plus(self.snapshot_seconds, (time.perf_counter(), time.process_time()), parsed)

    def _add(
        self, obj: Obj, source: str, index: int, line: int | None, item_lines: tuple[int, ...], where: str
    ) -> None:
        kind = str(obj.get("kind", ""))
        if kind == "List" or (kind.endswith("List") and "items" in obj):  # as snapshot.iter_flattened
            item_kind = kind[: -len("List")] if kind != "List" else ""
            items = obj.get("items") or []
            for position, item in enumerate(items if isinstance(items, list) else []):
                if not isinstance(item, dict):
                    continue
                if item_kind and "kind" not in item:
                    item = {**item, "kind": item_kind}
                item_line = item_lines[position] if position < len(item_lines) else None
                self._add(item, source, index, item_line, (), f"{where} item {position + 1}")
            return
        if kind not in KIND_FIELDS:
            self.ignored += 1
            return
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict) or not name_of(obj):
            reason = "without metadata.name"
            if isinstance(metadata, dict) and metadata.get("generateName"):
                reason += " (a generateName manifest: the API server picks the name)"
            self.warnings.append(f"{source}: document {index}{where}: {kind} {reason}; skipped")
            return
        namespace = "" if kind in CLUSTER_SCOPED_KINDS else namespace_of(obj)  # as the snapshot stores it
        if line is not None:
            self.locations.setdefault((kind, namespace, name_of(obj)), (source, line))
        if not namespace and kind in DEFAULT_NAMESPACE_KINDS:
            # Manifests often omit metadata.namespace (kubectl applies them to "default"); so does the scan.
            metadata["namespace"] = "default"
        self.snapshot.add(obj)
        self.objects_read += 1


def _plus(total: tuple[float, float], end: tuple[float, float], start: tuple[float, float]) -> tuple[float, float]:
    return total[0] + end[0] - start[0], total[1] + end[1] - start[1]


# Namespaced kinds the rules read, defaulted to the "default" namespace like kubectl does.
DEFAULT_NAMESPACE_KINDS = frozenset(
    {"RoleBinding", "Role", "ServiceAccount", "Pod", "NetworkPolicy", "Secret", "AccessPolicy", "Deployment",
     "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet"}
)  # fmt: skip


def load_files(paths: list[str], *, positions: bool = True) -> FileInput:
    """Read -f inputs file by file into one snapshot (with each object's start line when positions).
    Raises InputError for a missing path or an unparsable file named explicitly."""
    loaded = FileInput(positions=positions)
    if not HAS_LIBYAML:
        loaded.warnings.append(LIBYAML_NOTICE)
    for raw in paths:
        if raw == "-":
            loaded.read_text(sys.stdin.read(), "<stdin>")
            continue
        lenient = Path(raw).is_dir()
        for path in _manifest_files(Path(raw)):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                if not lenient:
                    raise InputError(f"{path}: cannot read: {error}") from None
                loaded.warnings.append(f"{path}: skipped, cannot read: {error}")
                continue
            loaded.read_text(text, path.as_posix(), json_hint=path.suffix.lower() == ".json", lenient=lenient)
            del text  # not held through the audit: a 50,000-object dump is ~15-30 MB of text
    return loaded


@dataclasses.dataclass
class LoadedInput:
    snapshot: ClusterSnapshot
    locations: Locations
    source: str
    parse_seconds: tuple[float, float] = (0.0, 0.0)
    snapshot_seconds: tuple[float, float] = (0.0, 0.0)


MAX_WARNINGS_SHOWN = 20


def load_input(args: argparse.Namespace) -> LoadedInput:
    """The snapshot from -f files (problems printed on stderr as warnings), or else from the live cluster
    (with a progress display when stderr is a terminal)."""
    if args.filename:
        loaded = load_files(args.filename, positions=getattr(args, "output", None) == "sarif")
        _print_warnings(loaded.warnings)
        problems = [w for w in loaded.warnings if w != LIBYAML_NOTICE]
        if not loaded.objects_read and problems:
            raise InputError(f"nothing could be read from the input ({len(problems)} problem(s) above)")
        return LoadedInput(loaded.snapshot, loaded.locations, ", ".join(args.filename), loaded.parse_seconds,
                           loaded.snapshot_seconds)  # fmt: skip
    started = time.perf_counter(), time.process_time()
    snapshot = _load_live(args)
    where = f"context {args.context}" if args.context else "current context"
    elapsed = _plus((0.0, 0.0), (time.perf_counter(), time.process_time()), started)
    return LoadedInput(snapshot, {}, where, snapshot_seconds=elapsed)


def _print_warnings(warnings: list[str]) -> None:
    if not warnings:
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    for warning in warnings[:MAX_WARNINGS_SHOWN]:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if len(warnings) > MAX_WARNINGS_SHOWN:
        console.print(f"[yellow]warning:[/yellow] ... and {len(warnings) - MAX_WARNINGS_SHOWN} more", highlight=False)


def _load_live(args: argparse.Namespace) -> ClusterSnapshot:
    # Imported lazily: file scans must work without the Kubernetes client stack.
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

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


def parse_now_flag(value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_context_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = " ".join(DEFAULT_EXCLUDED_PREFIXES)
    parser.add_argument(
        "--now", type=parse_now_flag, metavar="TIME",
        help="judge time-dependent rules (exemption expiry, token ages) as of TIME, RFC 3339 or a date, instead of "
        "the system clock: reproducible output for CI and reviews",
    )  # fmt: skip
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
    clock: Clock = SYSTEM_CLOCK if args.now is None else FixedClock(args.now)
    ctx = OperatorSettings().audit_context(now=clock.now(), excluded_subject_prefixes=prefixes)
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
    parser.add_argument(
        "-o", "--output", choices=FORMATS, default="table",
        help="output format (default: table): table (a table on a wide terminal, else one line per finding), "
        "wide (one line per finding with every field, never wrapped), json, sarif",
    )  # fmt: skip
    parser.add_argument(
        "--fail-on", choices=[*[s.value for s in Severity], "none"], default="none", metavar="SEVERITY",
        help="exit 1 when a non-exempt finding is at or above SEVERITY: low, medium, high, critical, none (default)",
    )  # fmt: skip
    parser.add_argument(
        "--rules", action="append", metavar="IDS",
        help="only these rule ids or prefixes, comma-separated (e.g. AH-RBAC-009,AH-NET); repeatable",
    )  # fmt: skip
    add_context_arguments(parser)
    # main() ends the process right after the output (the snapshot and findings are not freed one by one).
    parser.set_defaults(func=run, exit_without_teardown=True)

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
    # A scan allocates many long-lived objects and frees them all at exit: the cyclic GC's full
    # collections only cost time here (up to half of a 50,000-object audit), so it is off for the run.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run(args, PhaseTimer())
    finally:
        if gc_was_enabled:
            gc.enable()


def _run(args: argparse.Namespace, timer: "PhaseTimer") -> int:
    from access_hygiene.engine.audit.runner import load_rules, run_audit

    try:
        ctx = audit_context(args)
        timer.lap("import")  # settings and rule modules load here
        loaded = load_input(args)
        timer.add("parse", *loaded.parse_seconds)
        timer.add("snapshot", *loaded.snapshot_seconds)
        timer.restart()
        findings = run_audit(loaded.snapshot, ctx, only=_selected(args))
        timer.lap("audit")
    except (InputError, ValueError) as error:
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True).print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
    # rich (and the OpenReports renderer) are imported only for the formats that use them.
    if args.output == "json":
        write_json(findings_json(findings, as_models=True), sys.stdout, plain=lambda: findings_json(findings))
    elif args.output == "sarif":
        write_json(findings_sarif(findings, load_rules().values(), loaded.locations), sys.stdout)
    elif args.output == "openreports":
        from access_hygiene.cli.openreports_output import write_openreports

        write_openreports(findings, sys.stdout)
    else:
        from rich.console import Console

        if args.output == "wide":
            render_wide(findings, Console(soft_wrap=True))
        else:
            render_table(findings, Console())
    sys.stdout.flush()
    timer.lap("output")
    timer.report()
    return EXIT_FINDINGS if fails(findings, args.fail_on) else EXIT_OK


class PhaseTimer:
    """Wall and CPU seconds per phase, printed as one JSON line on stderr when ACCESS_HYGIENE_TIMINGS is set
    (the benchmark reads it). `import` is the time from process start to the scan starting."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {"import": time.time() - _process_start()}
        self.cpu: dict[str, float] = {"import": time.process_time()}
        self.restart()

    def add(self, phase: str, wall: float, cpu: float) -> None:
        self.wall[phase] = self.wall.get(phase, 0.0) + wall
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu

    def restart(self) -> None:
        self.started, self.started_cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        self.add(phase, time.perf_counter() - self.started, time.process_time() - self.started_cpu)
        self.restart()

    def report(self) -> None:
        if os.environ.get("ACCESS_HYGIENE_TIMINGS"):
            rounded = {name: {k: round(v, 3) for k, v in phases.items()} for name, phases in
                       (("wall", self.wall), ("cpu", self.cpu))}  # fmt: skip
            sys.stderr.write(json.dumps({"timings": rounded}) + "\n")


def _process_start() -> float:
    """When this process started (Linux /proc; elsewhere: now, so the import phase reads 0)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))  # fmt: skip
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def run_rules(args: argparse.Namespace) -> int:
    from rich.console import Console

    from access_hygiene.engine.audit.runner import load_rules

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
