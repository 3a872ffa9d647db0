"""AH-RBAC-023: permissions granted to a ServiceAccount that the audit window shows it never used.

Needs usage data from audit logs (engine/usage/aggregation.py), passed in `ctx.cache["usage"]` by the caller
(`access-hygiene unused`); without it, or when the data spans less than its minimum window, the rule
reports nothing. ServiceAccounts with no request in the window are never reported: no activity data is
not evidence of anything. Default bindings kube-apiserver maintains for every identity are skipped.
"""

from collections.abc import Iterator
from typing import TYPE_CHECKING

from access_hygiene.engine.catalogue.registry import rule
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.permissions import is_excluded, permission_index
from access_hygiene.models.findings import Finding, Severity

if TYPE_CHECKING:  # imported when usage data is attached: an audit without audit logs does not need it
    from access_hygiene.engine.usage.aggregation import UsageData
    from access_hygiene.engine.usage.unused import UnusedGrants

RULE_ID = "AH-RBAC-023"
USAGE_CACHE_KEY = "usage"
MAX_LISTED = 12


def usage_of(ctx: AuditContext) -> "UsageData | None":
    value = ctx.cache.get(USAGE_CACHE_KEY)
    if value is None:
        return None
    from access_hygiene.engine.usage.aggregation import UsageData

    return value if isinstance(value, UsageData) else None


def with_usage(ctx: AuditContext, usage: "UsageData") -> AuditContext:
    """The context with audit-log usage attached (what AH-RBAC-023 reads)."""
    ctx.cache[USAGE_CACHE_KEY] = usage
    return ctx


def all_unused(snapshot: ClusterSnapshot, ctx: AuditContext) -> list["UnusedGrants"]:
    """Unused grants of every active, non-excluded ServiceAccount; empty when the window is too short."""
    usage = usage_of(ctx)
    if usage is None or not usage.judgeable:
        return []
    from access_hygiene.engine.usage.unused import unused_grants

    index = permission_index(snapshot, ctx)
    results: list[UnusedGrants] = []
    for subject, subject_usage in usage.service_accounts():
        if not is_excluded(subject, ctx):
            results.extend(unused_grants(index, subject, subject_usage))
    return results


def describe(item: "UnusedGrants", usage: "UsageData") -> str:
    binding = item.binding
    role = f"{binding.role_ref.kind} {binding.role_ref.name}"
    where = f"{binding.ref.kind} {binding.namespace + '/' if binding.namespace else ''}{binding.ref.name}"
    listed = "; ".join(p.describe() for p in item.unused[:MAX_LISTED])
    more = f"; and {len(item.unused) - MAX_LISTED} more" if len(item.unused) > MAX_LISTED else ""
    return f"{where} ({role}) grants permissions unused in {usage.describe_window()} of audit data: {listed}{more}"


@rule(
    RULE_ID,
    Severity.LOW,
    "Granted but unused",
    "A binding gives a ServiceAccount permissions that no request of the audit window used. Needs audit "
    "logs (`access-hygiene unused`); reported only when the data spans the minimum window (default 7 days) "
    "and only for ServiceAccounts with activity in it. `access-hygiene suggest` writes the AccessPolicy "
    "that grants exactly what was used.",
)
def granted_but_unused(snapshot: ClusterSnapshot, ctx: AuditContext) -> Iterator[Finding]:
    usage = usage_of(ctx)
    if usage is None:
        return
    for item in all_unused(snapshot, ctx):
        yield Finding(
            rule_id=RULE_ID,
            severity=Severity.LOW,
            namespace=item.binding.namespace,
            object=item.binding.ref,
            subject=item.subject,
            message=describe(item, usage),
        )
