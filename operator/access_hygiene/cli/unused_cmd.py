"""`access-hygiene unused`: permissions ServiceAccounts hold (live cluster or manifests) but never used (audit logs).

Effective permissions come from the same PermissionIndex as `scan` and `who-can`; usage from the audit
logs. Reported as rule AH-RBAC-023 (exemptions apply), one finding per binding and ServiceAccount, naming
every unused verb and resource. Judged only when the logs span at least --min-window, and only for
ServiceAccounts that made at least one request in it: no activity is not evidence.

Exit codes: 0 judged (findings, if any, printed); 1 judged but the input was partial (unreadable lines or a
truncated gzip, listed on stderr); 2 usage or input error; 3 not judged (window too short or no request: the
output says "Not judged" and why, never "No findings.").
"""

import argparse
import math
import sys
from typing import Any

from rich.console import Console

from access_hygiene.cli.auditlog_input import (
    AuditInputError,
    add_log_arguments,
    parse_duration_flag,
    read_audit_logs,
)
from access_hygiene.cli.output import findings_json, findings_sarif, render_table, write_json
from access_hygiene.cli.scan import InputError, add_context_arguments, add_input_arguments, audit_context, load_input
from access_hygiene.cli.suggest_cmd import parse_service_account
from access_hygiene.engine.catalogue.unused_grants import RULE_ID, all_unused, with_usage
from access_hygiene.engine.rbac.permissions import SA_USER_PREFIX
from access_hygiene.engine.usage.aggregation import (
    DEFAULT_MIN_WINDOW_SECONDS,
    UsageData,
    format_duration,
    format_time,
    service_account_username,
)

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NOT_JUDGED = 0, 1, 2, 3


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    parser = subparsers.add_parser(
        "unused",
        help="list permissions ServiceAccounts are granted but did not use (audit logs + cluster or manifests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    add_input_arguments(parser)
    parser.add_argument(
        "--min-window", type=parse_duration_flag, default=float(DEFAULT_MIN_WINDOW_SECONDS), metavar="DURATION",
        help="judge only when the audit data spans at least DURATION (default 7d; e.g. 24h, 30d)",
    )  # fmt: skip
    parser.add_argument(
        "--serviceaccount", "--sa", action="append", type=parse_service_account, metavar="NS:NAME",
        help="only these ServiceAccounts (repeatable; default: every one with activity)",
    )  # fmt: skip
    parser.add_argument("-o", "--output", choices=("table", "json", "sarif"), default="table")
    add_context_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from access_hygiene.engine.audit.runner import load_rules, run_audit

    errors = Console(stderr=True)
    wanted = {service_account_username(ns, name) for ns, name in args.serviceaccount or []}
    usage = UsageData(
        since=args.since if args.since is not None else -math.inf,
        until=args.until if args.until is not None else math.inf,
        wanted=wanted.__contains__ if wanted else lambda user: user.startswith(SA_USER_PREFIX),
        min_window_seconds=args.min_window,
    )
    try:
        report = read_audit_logs(args.logs, usage)
        ctx = with_usage(audit_context(args), usage)
        loaded = load_input(args)
        findings = run_audit(loaded.snapshot, ctx, only=[RULE_ID])
    except (AuditInputError, InputError, ValueError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        return EXIT_USAGE
    for line in report.problem_lines():
        errors.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    active = sum(1 for _ in usage.service_accounts())
    window = usage.describe_window()
    not_judged = ""
    if not usage.judgeable:
        reason = (
            f"the audit data spans {window}, less than --min-window {format_duration(args.min_window)}"
            if usage.requests
            else "the audit data has no request in the window"
        )
        not_judged = f"Not judged: {reason}; no permission is called unused on so little data."
        if args.output != "table":  # the table output says it itself, instead of "No findings."
            errors.print(not_judged, highlight=False)
    else:
        errors.print(
            f"Judged {active} active ServiceAccount(s) over {window} of audit data ({report.events} events read).",
            highlight=False,
        )
    if args.output == "json":
        unused_by_key = {
            (u.binding.ref.kind, u.binding.namespace, u.binding.ref.name, str(u.subject)): u
            for u in all_unused(loaded.snapshot, ctx)
        }
        data = findings_json(findings)
        for finding, item in zip(findings, data["findings"], strict=True):
            obj = finding.object
            grant = unused_by_key.get((obj.kind, finding.namespace, obj.name, str(finding.subject)))
            item["role"] = grant.binding.role_ref.model_dump(mode="json") if grant else None
            item["unused"] = [p.to_wire() for p in grant.unused] if grant else []
        data["window"] = {
            "judged": usage.judgeable,
            "first": format_time(usage.first),
            "last": format_time(usage.last),
            "seconds": usage.window_seconds,
            "minSeconds": args.min_window,
            "activeServiceAccounts": active,
        }
        data["input"] = report.to_wire()
        write_json(data, sys.stdout)
    elif args.output == "sarif":
        sarif = findings_sarif(findings, load_rules().values(), loaded.locations)
        if not_judged:  # no result must not read as "nothing unused"
            notice = {"level": "warning", "message": {"text": not_judged}}
            sarif["runs"][0]["invocations"] = [{"executionSuccessful": True, "toolExecutionNotifications": [notice]}]
        write_json(sarif, sys.stdout)
    elif not_judged:
        Console().print(not_judged, highlight=False, soft_wrap=True)
    else:
        render_table(findings, Console())
    if not usage.judgeable:
        return EXIT_NOT_JUDGED
    return EXIT_PARTIAL if report.partial else EXIT_OK
