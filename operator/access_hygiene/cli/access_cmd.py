"""`access-hygiene access request|approve|revoke|list`: just-in-time access against a live cluster, as the user
of the kubeconfig (docs/just-in-time-access.md).

The requester or approver identity is not typed in: it is what the API server says the kubeconfig's user is
(SelfSubjectReview), and admission refuses any other. Output is kubectl's: `<kind>/<name> created`, a table
for `list`, or the object with `-o yaml|json`. Exit 1 when the API server refuses (its message on stderr).
"""

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

import yaml

from access_hygiene import API_GROUP, API_VERSION
from access_hygiene.clock import SYSTEM_CLOCK, Clock, FixedClock, parse_instant

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
Obj = dict[str, Any]
LIST_COLUMNS = ("NAME", "REQUESTER", "ROLE", "STATE", "EXPIRES", "AGE")


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    access = subparsers.add_parser(
        "access",
        help="just-in-time access: request a role for a while, approve, revoke, list",
        description="Just-in-time access as the kubeconfig's user: requests and approvals are objects the API "
        "server admits or refuses (AccessRequest, AccessApproval); the operator grants and revokes.",
    )
    actions = access.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser, output: Sequence[str]) -> None:
        parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
        parser.add_argument("-o", "--output", choices=output, default=output[0])
        parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
        parser.add_argument("--context", help="kubeconfig context (default: the current one)")

    request = actions.add_parser("request", help="ask for the role of an AccessEligibility in a namespace")
    request.add_argument("eligibility", help="the AccessEligibility to request under")
    request.add_argument("--duration", required=True, help="how long, Go form: 30m, 1h30m (at most its maxDuration)")
    request.add_argument("--reason", required=True, help="why the access is needed (recorded)")
    request.add_argument("--start-at", type=_instant, help="RFC 3339 start (default: when approved)")
    request.add_argument("--name", help="the request's name (default: generated from the eligibility)")
    common(request, ("name", "yaml", "json"))
    request.set_defaults(func=run_request)

    approve = actions.add_parser("approve", help="approve (or --deny) an AccessRequest of the namespace")
    approve.add_argument("request", help="the AccessRequest's name")
    approve.add_argument("--deny", action="store_true", help="record a Deny decision instead")
    approve.add_argument("--comment", help="a comment recorded with the decision")
    common(approve, ("name", "yaml", "json"))
    approve.set_defaults(func=run_approve)

    revoke = actions.add_parser("revoke", help="end an AccessRequest's access now (spec.revoked: true)")
    revoke.add_argument("request", help="the AccessRequest's name")
    common(revoke, ("name", "yaml", "json"))
    revoke.set_defaults(func=run_revoke)

    listing = actions.add_parser("list", help="list AccessRequests: requester, role, state, expiry")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    listing.add_argument("--now", type=_instant, help=argparse.SUPPRESS)  # tests: a fixed "now" for the ages
    common(listing, ("table", "yaml", "json"))
    listing.set_defaults(func=run_list)


def _instant(value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- pure: manifests and output -----------------------------------------------------------------------


def request_manifest(
    eligibility: str,
    namespace: str,
    username: str,
    groups: Sequence[str],
    duration: str,
    reason: str,
    start_at: datetime | None = None,
    name: str | None = None,
) -> Obj:
    """An AccessRequest for the caller (the identity SelfSubjectReview returned: admission holds it to that)."""
    metadata: Obj = {"namespace": namespace}
    if name:
        metadata["name"] = name
    else:
        metadata["generateName"] = f"{eligibility[:52]}-"
    spec: Obj = {
        "eligibility": eligibility,
        "requester": {"username": username, "groups": list(groups)},
        "duration": duration,
        "reason": reason,
    }
    if start_at is not None:
        spec["startAt"] = start_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "AccessRequest", "metadata": metadata, "spec": spec}


def approval_manifest(
    request: str, namespace: str, username: str, groups: Sequence[str], deny: bool, comment: str | None
) -> Obj:
    spec: Obj = {
        "request": request,
        "approver": {"username": username, "groups": list(groups)},
        "decision": "Deny" if deny else "Approve",
    }
    if comment:
        spec["comment"] = comment
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "AccessApproval",
        "metadata": {"namespace": namespace, "generateName": f"{request[:52]}-"},
        "spec": spec,
    }


def human_duration(delta: timedelta) -> str:
    """kubectl's short form of a duration (apimachinery's HumanDuration): 45s, 5m30s, 25m, 2h10m, 3d4h, 12d."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _when(text: str | None, now: datetime) -> str:
    """A future time as `in 25m`, a past one as `3m ago`, none as `-`."""
    if not text:
        return "-"
    try:
        moment = parse_instant(text)
    except ValueError:
        return text
    return f"in {human_duration(moment - now)}" if moment > now else f"{human_duration(now - moment)} ago"


def request_row(request: Obj, now: datetime, *, with_namespace: bool) -> list[str]:
    metadata, spec, status = request.get("metadata") or {}, request.get("spec") or {}, request.get("status") or {}
    created = metadata.get("creationTimestamp")
    age = human_duration(now - parse_instant(created)) if created else "-"
    row = [
        str(metadata.get("name", "")),
        str((spec.get("requester") or {}).get("username") or "-"),
        str(status.get("role") or "-"),
        str(status.get("state") or "-"),
        _when(status.get("expiresAt"), now),
        age,
    ]
    return [str(metadata.get("namespace", "")), *row] if with_namespace else row


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl's plain table: upper-case header, columns padded to their widest cell and three spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [list(header), *rows]
    ]
    return "\n".join(lines) + "\n"


def list_output(requests: Sequence[Obj], now: datetime, *, all_namespaces: bool, namespace: str) -> str:
    if not requests:
        where = "any namespace" if all_namespaces else f"{namespace} namespace"
        return f"No AccessRequests found in {where}.\n"
    ordered = sorted(requests, key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"].get("name", "")))
    header = ("NAMESPACE", *LIST_COLUMNS) if all_namespaces else LIST_COLUMNS
    return format_table(header, [request_row(r, now, with_namespace=all_namespaces) for r in ordered])


def object_output(obj: Obj, output: str, verb: str) -> str:
    if output == "json":
        return json.dumps(obj, indent=2) + "\n"
    if output == "yaml":
        return yaml.safe_dump(obj, sort_keys=False)
    plural = {"AccessRequest": "accessrequest", "AccessApproval": "accessapproval"}[str(obj["kind"])]
    return f"{plural}.{API_GROUP}/{obj['metadata']['name']} {verb}\n"


# --- commands -------------------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> tuple[Any, str]:
    # Imported here: `access-hygiene --help` and the other subcommands do not load the kubernetes client.
    from access_hygiene.k8s import access_api
    from access_hygiene.k8s.client import make_api_client

    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    namespace = args.namespace or access_api.kubeconfig_namespace(kubeconfig, args.context)
    return make_api_client(kubeconfig, args.context), namespace


def _run(args: argparse.Namespace, out: TextIO, action: Any) -> int:
    from access_hygiene.k8s.access_api import AccessApiError

    try:
        api, namespace = _connect(args)
        with api:
            out.write(action(api, namespace))
    except AccessApiError as error:
        print(str(error), file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK


def run_request(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from access_hygiene.k8s import access_api

    def act(api: Any, namespace: str) -> str:
        me = access_api.whoami(api)
        manifest = request_manifest(
            args.eligibility, namespace, me.username, me.groups, args.duration, args.reason, args.start_at, args.name
        )
        return object_output(access_api.create(api, manifest), args.output, "created")

    return _run(args, out, act)


def run_approve(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from access_hygiene.k8s import access_api

    def act(api: Any, namespace: str) -> str:
        me = access_api.whoami(api)
        manifest = approval_manifest(args.request, namespace, me.username, me.groups, args.deny, args.comment)
        return object_output(access_api.create(api, manifest), args.output, "created")

    return _run(args, out, act)


def run_revoke(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from access_hygiene.k8s import access_api

    def act(api: Any, namespace: str) -> str:
        return object_output(access_api.revoke(api, namespace, args.request), args.output, "revoked")

    return _run(args, out, act)


def run_list(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from access_hygiene.k8s import access_api

    clock: Clock = SYSTEM_CLOCK if args.now is None else FixedClock(args.now)

    def act(api: Any, namespace: str) -> str:
        requests = access_api.list_requests(api, "" if args.all_namespaces else namespace)
        if args.output == "json":
            return json.dumps({"apiVersion": "v1", "kind": "List", "items": requests}, indent=2) + "\n"
        if args.output == "yaml":
            return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": requests}, sort_keys=False)
        return list_output(requests, clock.now(), all_namespaces=args.all_namespaces, namespace=namespace)

    return _run(args, out, act)
