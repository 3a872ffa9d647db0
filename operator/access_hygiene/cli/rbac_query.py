"""`access-hygiene who-can VERB RESOURCE` and `access-hygiene explain SUBJECT`: effective RBAC, with the
bindings and roles that grant it. Same input options and exit codes as `scan` (2 on input errors)."""

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from access_hygiene.cli.output import write_json
from access_hygiene.cli.scan import EXIT_OK, EXIT_USAGE, InputError, add_input_arguments, load_input
from access_hygiene.engine.rbac.capabilities import binding_capabilities
from access_hygiene.engine.rbac.permissions import MASTERS_GROUP, Binding, PermissionIndex, UserInfo, parse_subject
from access_hygiene.models.findings import Subject


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    who_can = subparsers.add_parser(
        "who-can",
        help="list the subjects allowed VERB on RESOURCE, with the bindings that allow it",
        description="RESOURCE is kubectl-style: pods, pods/exec, deployments.apps, deployments.apps/scale. "
        "Without -n the request is cluster-wide (cluster-scoped resources, or all namespaces at once).",
    )
    who_can.add_argument("verb")
    who_can.add_argument("resource")
    who_can.add_argument("-n", "--namespace", default="", help="namespace of the request (default: cluster-wide)")
    who_can.add_argument("--name", default="", help="object name (matters for roles with resourceNames)")
    who_can.add_argument("--api-group", help="API group (default: from RESOURCE, e.g. deployments.apps -> apps)")
    who_can.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_input_arguments(who_can)
    who_can.set_defaults(func=run_who_can)

    explain = subparsers.add_parser(
        "explain",
        help="print a subject's effective permissions and the bindings/roles that grant them",
        description="SUBJECT: system:serviceaccount:NS:NAME, ServiceAccount:NS/NAME, User:NAME or Group:NAME. "
        "Users and service accounts include what their groups (system:authenticated, ...) are granted.",
    )
    explain.add_argument("subject")
    explain.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_input_arguments(explain)
    explain.set_defaults(func=run_explain)


def split_resource(text: str, api_group: str | None) -> tuple[str, str]:
    """`deployments.apps/scale` -> ("deployments/scale", "apps"); an explicit api_group wins."""
    resource, slash, subresource = text.partition("/")
    name, dot, group = resource.partition(".")
    if not name:
        raise ValueError(f"invalid resource {text!r}")
    return name + slash + subresource, api_group if api_group is not None else (group if dot else "")


def _index(args: argparse.Namespace) -> PermissionIndex:
    return PermissionIndex.build(load_input(args).snapshot)


def run_who_can(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    try:
        resource, api_group = split_resource(args.resource, args.api_group)
        index = _index(args)
    except (InputError, ValueError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        return EXIT_USAGE
    pairs = index.who_can(args.verb, resource, args.namespace, api_group=api_group, name=args.name)
    if args.output == "json":
        write_json(
            [
                {
                    "subject": pair[0].model_dump(),
                    "namespace": grant.namespace,
                    "binding": grant.via_binding.model_dump(),
                    "role": grant.via_role.model_dump(),
                    "rule": {
                        "verb": grant.verb,
                        "apiGroup": grant.api_group,
                        "resource": grant.resource,
                        "resourceNames": sorted(grant.resource_names),
                    },
                }
                for pair in pairs
                for grant in [pair[1]]
            ],
            sys.stdout,
        )
        return EXIT_OK
    console = Console()
    where = f"in namespace {args.namespace}" if args.namespace else "cluster-wide"
    group_text = f" ({api_group or 'core'} API group)"
    console.print(f"Who can [bold]{args.verb} {resource}[/bold]{group_text} {where}:", highlight=False)
    table = Table(header_style="bold")
    for column in ("Subject", "Scope", "Binding", "Role", "Matched"):
        table.add_column(column, overflow="fold")
    for subject, grant in pairs:
        matched = f"{grant.verb} {grant.api_group or 'core'}/{grant.resource}"
        if grant.resource_names:
            matched += f" [{','.join(sorted(grant.resource_names))}]"
        table.add_row(
            str(subject), grant.namespace or "cluster", f"{grant.via_binding.kind}/{grant.via_binding.name}",
            f"{grant.via_role.kind}/{grant.via_role.name}", matched,
        )  # fmt: skip
    console.print(table)
    console.print(f"[dim]Members of {MASTERS_GROUP} are allowed everything and are not listed.[/dim]")
    return EXIT_OK


def run_explain(args: argparse.Namespace) -> int:
    errors = Console(stderr=True)
    try:
        subject = parse_subject(args.subject)
        index = _index(args)
    except (InputError, ValueError) as error:
        errors.print(f"[red]error:[/red] {error}", highlight=False)
        return EXIT_USAGE
    info = UserInfo.of(subject)
    matches = sorted(index.bindings_for(info), key=lambda pair: (pair[1].namespace, pair[1].ref.kind, pair[1].ref.name))
    capabilities = sorted({cap for _, binding in matches for cap in binding_capabilities(binding)})
    if args.output == "json":
        write_json(_explain_json(subject, info, matches, capabilities), sys.stdout)
        return EXIT_OK
    console = Console()
    console.print(f"[bold]{subject}[/bold] (user {info.name or '-'}, groups {', '.join(sorted(info.groups))})",
                  highlight=False)  # fmt: skip
    if MASTERS_GROUP in info.groups:
        console.print(f"[red]Member of {MASTERS_GROUP}: every request is allowed, RBAC is bypassed.[/red]")
    if not matches:
        console.print("No binding applies to this subject.")
        return EXIT_OK
    table = Table(header_style="bold")
    for column in ("Scope", "Binding", "Role", "Via", "Rules"):
        table.add_column(column, overflow="fold")
    for via, binding in matches:
        role = f"{binding.role_ref.kind}/{binding.role_ref.name}" + ("" if binding.role_found else " (missing)")
        rules = "\n".join(rule.describe() for rule in binding.rules) or "-"
        table.add_row(binding.namespace or "cluster", f"{binding.ref.kind}/{binding.ref.name}", role, str(via), rules)
    console.print(table)
    console.print(f"Capabilities: {', '.join(capabilities) or 'none'}", highlight=False)
    return EXIT_OK


def _explain_json(
    subject: Subject, info: UserInfo, matches: list[tuple[Subject, Binding]], capabilities: list[str]
) -> dict[str, Any]:
    return {
        "subject": subject.model_dump(),
        "user": info.name,
        "groups": sorted(info.groups),
        "capabilities": capabilities,
        "bindings": [
            {
                "binding": binding.ref.model_dump(),
                "role": binding.role_ref.model_dump(),
                "roleFound": binding.role_found,
                "namespace": binding.namespace,
                "via": via.model_dump(),
                "rules": [
                    {
                        "verbs": sorted(r.verbs),
                        "apiGroups": sorted(r.api_groups),
                        "resources": sorted(r.resources),
                        "resourceNames": sorted(r.resource_names),
                        "nonResourceURLs": sorted(r.non_resource_urls),
                    }
                    for r in binding.rules
                ],
            }
            for via, binding in matches
        ],
    }
