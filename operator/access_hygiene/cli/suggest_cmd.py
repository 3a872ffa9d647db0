"""`access-hygiene suggest`: audit logs in, a least-privilege AccessPolicy per ServiceAccount out.

The rules cover exactly the requests the log shows allowed (see engine/usage/suggestions.py); denied requests are
listed as comments, never granted. YAML (default) is ready for `kubectl apply -f`; `-o json` is for scripts.

Exit codes: 0 suggestion written; 1 written but the input was partial (unreadable lines or a truncated
gzip, listed on stderr) or a requested ServiceAccount made no request in the window; 2 usage or input error.
"""

import argparse
import json
import math
import sys
from typing import Any

import yaml

from access_hygiene.cli.auditlog_input import AuditInputError, InputReport, add_log_arguments, read_audit_logs
from access_hygiene.engine.rbac.permissions import SA_USER_PREFIX
from access_hygiene.engine.usage.aggregation import (
    DEFAULT_NAMES_THRESHOLD,
    MAX_CLUSTER_RULES,
    MAX_RESOURCE_NAMES,
    MAX_RULES,
    UsageData,
    format_time,
    service_account_username,
)
from access_hygiene.engine.usage.suggestions import (
    Suggestion,
    non_resource_manifests,
    policy_manifest,
    policy_name,
    suggest,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def parse_service_account(text: str) -> tuple[str, str]:
    """NS:NAME, NS/NAME or system:serviceaccount:NS:NAME."""
    value = text[len(SA_USER_PREFIX) :] if text.startswith(SA_USER_PREFIX) else text
    for separator in (":", "/"):
        namespace, sep, name = value.partition(separator)
        if sep and namespace and name and separator not in name:
            return namespace, name
    raise argparse.ArgumentTypeError(f"{text!r} is not a ServiceAccount: use NAMESPACE:NAME")


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser(
        "suggest",
        help="write least-privilege AccessPolicies from what ServiceAccounts did (Kubernetes audit logs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--serviceaccount", "--sa", action="append", type=parse_service_account, metavar="NS:NAME",
        help="the ServiceAccount to suggest a policy for (repeatable)",
    )  # fmt: skip
    who.add_argument(
        "--all", action="store_true", help="every ServiceAccount with activity (kube-* namespaces excluded)"
    )
    parser.add_argument(
        "--names-threshold", type=int, default=DEFAULT_NAMES_THRESHOLD, metavar="N",
        help=f"restrict a rule to resourceNames when the app touched at most N named objects "
        f"(default {DEFAULT_NAMES_THRESHOLD}; 0 never restricts)",
    )  # fmt: skip
    parser.add_argument("--mode", choices=("audit", "enforce"), help="spec.mode of the policies (default: unset)")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    parser.set_defaults(func=run)


def _header(suggestion: Suggestion, report: InputReport) -> list[str]:
    sa = f"{suggestion.namespace}/{suggestion.service_account}"
    lines = [
        f"Suggested by `access-hygiene suggest` for ServiceAccount {sa} from {suggestion.requests} request(s)",
        f"between {format_time(suggestion.first)} and {format_time(suggestion.last)} "
        f"(audit logs: {', '.join(report.sources)}).",
        "Rules cover exactly what was allowed in that window; code paths the window did not exercise are missing.",
        "If the ServiceAccount already exists, let the operator adopt it first:",
        f"  kubectl annotate serviceaccount -n {suggestion.namespace} {suggestion.service_account} "
        "accesshygiene.io/adopt=true",
        "then remove the wider bindings it had (the operator never touches objects it does not own).",
    ]
    if report.partial:
        lines.insert(0, "WARNING: partial input (unreadable lines or a truncated file, listed on stderr);")
        lines.insert(1, "requests on those lines are not covered by this suggestion.")
    if suggestion.cluster_rules:
        where = f" and in namespaces {', '.join(suggestion.other_namespaces)}" if suggestion.other_namespaces else ""
        lines += [
            f"clusterRules: cluster-scoped or all-namespace requests{where}. They apply in every namespace,",
            "and the operator refuses them unless cluster rules are allowed in its configuration.",
        ]
    if suggestion.denied:
        lines.append("Denied (the app tried these and was refused; not granted):")
        lines += [f"  {item}" for item in suggestion.denied]
    if suggestion.default_granted:
        lines.append("Not included (every authenticated identity has these through kube-apiserver's default roles):")
        lines += [f"  {item}" for item in suggestion.default_granted]
    if len(suggestion.rules) > MAX_RULES or len(suggestion.cluster_rules) > MAX_CLUSTER_RULES:
        lines.append(
            f"WARNING: {len(suggestion.rules)} rules / {len(suggestion.cluster_rules)} clusterRules exceed the "
            f"AccessPolicy limits ({MAX_RULES} / {MAX_CLUSTER_RULES}): the API server will reject it as is."
        )
    if not suggestion.rules and not suggestion.cluster_rules:
        lines.append("No API permission was needed: the policy grants none (and mounts no token).")
    return lines


def _rule_notes(suggestion: Suggestion) -> list[tuple[str, int, str]]:
    """(field, index, note) for every rule that carries a note (it grants more than the names seen)."""
    return [
        (field, index, note)
        for field, rules in (("rules", suggestion.rules), ("clusterRules", suggestion.cluster_rules))
        for index, rule in enumerate(rules)
        for note in rule.notes
    ]


def _comment_rules(text: str, notes: list[tuple[str, int, str]]) -> str:
    """The dumped policy with each note as a comment line right above its rule (spec.rbac.<field>[index])."""
    lines, field, index = [], "", -1
    for line in text.splitlines():
        if line in ("    rules:", "    clusterRules:"):
            field, index = line.strip()[:-1], -1
        elif line.startswith("    - ") and field:
            index += 1
            lines += [f"    # {note}" for f, i, note in notes if (f, i) == (field, index)]
        elif not line.startswith("      "):
            field = ""
        lines.append(line)
    return "\n".join(lines) + "\n"


def _yaml_documents(suggestion: Suggestion, report: InputReport, mode: str | None) -> str:
    out = "".join(f"# {line}\n" if line else "#\n" for line in _header(suggestion, report))
    policy = yaml.safe_dump(policy_manifest(suggestion, mode), sort_keys=False, default_flow_style=None)
    out += _comment_rules(policy, _rule_notes(suggestion))
    extra = non_resource_manifests(suggestion)
    if extra:
        out += "---\n# Non-resource URLs the app used: an AccessPolicy cannot grant them, this ClusterRole does.\n"
        out += yaml.safe_dump_all(extra, sort_keys=False, default_flow_style=None)
    return out


def _json_entry(suggestion: Suggestion, mode: str | None) -> dict[str, Any]:
    return {
        "serviceAccount": {"namespace": suggestion.namespace, "name": suggestion.service_account},
        "requests": suggestion.requests,
        "first": format_time(suggestion.first),
        "last": format_time(suggestion.last),
        "manifests": [policy_manifest(suggestion, mode), *non_resource_manifests(suggestion)],
        "denied": suggestion.denied,
        "defaultGranted": suggestion.default_granted,
        "otherNamespaces": suggestion.other_namespaces,
        "notes": [{"rule": f"spec.rbac.{f}[{i}]", "text": note} for f, i, note in _rule_notes(suggestion)],
    }


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.names_threshold <= MAX_RESOURCE_NAMES:
        print(f"error: --names-threshold must be between 0 and {MAX_RESOURCE_NAMES}", file=sys.stderr)
        return EXIT_USAGE
    wanted_pairs: list[tuple[str, str]] = sorted(set(args.serviceaccount or []))
    wanted_users = {service_account_username(ns, name) for ns, name in wanted_pairs}
    usage = UsageData(
        since=args.since if args.since is not None else -math.inf,
        until=args.until if args.until is not None else math.inf,
        wanted=(wanted_users.__contains__ if wanted_users else lambda user: user.startswith(SA_USER_PREFIX)),
    )
    try:
        report = read_audit_logs(args.logs, usage)
    except AuditInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    for line in report.problem_lines():
        print(f"warning: {line}", file=sys.stderr)
    active = {(s.namespace, s.name): u for s, u in usage.service_accounts()}
    if args.all:
        targets = sorted(key for key in active if key[0] not in SYSTEM_NAMESPACES)
    else:
        targets = [key for key in wanted_pairs if key in active]
    missing = [f"{ns}/{name}" for ns, name in wanted_pairs if (ns, name) not in active]
    for name in missing:
        print(f"warning: ServiceAccount {name} made no request in the window: nothing to suggest", file=sys.stderr)
    suggestions = [suggest(active[key], key[0], key[1], args.names_threshold, usage.name_cap) for key in targets]
    if args.output == "json":
        data = {"suggestions": [_json_entry(s, args.mode) for s in suggestions], "input": report.to_wire()}
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("---\n".join(_yaml_documents(s, report, args.mode) for s in suggestions))
    if not suggestions and not missing:
        print("warning: no ServiceAccount made a request in the window", file=sys.stderr)
    print(
        f"Read {report.lines} line(s), {report.events} audit event(s); wrote {len(suggestions)} AccessPolicy(ies)"
        + (f" ({', '.join(policy_name(s.service_account) for s in suggestions)})" if suggestions else "")
        + ".",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if report.partial or missing or not suggestions else EXIT_OK
