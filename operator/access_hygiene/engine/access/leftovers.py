"""AH-GOV-005: what a just-in-time grant's window may have left behind.

Access granted for a window can be kept past it: a ServiceAccount token Secret minted, a RoleBinding written, a
Pod left running as some ServiceAccount. After a grant ends (Expired or Revoked, having been Active), each such
object in the grant's namespace that was created inside the window, still exists, is not the operator's own, and
is of a kind the granted role could create there, is reported.

What can be attributed, and what cannot: the API server records no creator on an object (managedFields name the
client program, "kubectl-create", not the user), so the window and the role's create permissions are the
evidence: "created while the grant was the way to create it". A ClusterRoleBinding is never one: a grant is a
RoleBinding, which confers namespaced permissions only. Because the creator is not proven, nothing is removed
automatically (enforce mode included); the finding names the object, the window and the grant to look at.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.clock import parse_instant
from access_hygiene.engine.access.risk import resource_rules
from access_hygiene.models.findings import Finding, ObjectRef, Severity

LEFTOVER_RULE_ID = "AH-GOV-005"
LEFTOVER_SEVERITY = Severity.HIGH
LEFTOVER_TITLE = "Object created during a just-in-time grant outlives it"
TOKEN_SECRET_ANNOTATION = "kubernetes.io/service-account.name"
MAX_LEFTOVERS = 20  # listed in a request's status; the findings carry all
# kind -> (apiGroup, resource) whose create permission makes the kind a possible leftover of a grant.
_CREATED_BY: dict[str, tuple[str, str, str]] = {
    "Secret": ("", "secrets", "v1"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings", "rbac.authorization.k8s.io/v1"),
    "Pod": ("", "pods", "v1"),
}


@dataclass(frozen=True)
class Leftover:
    kind: str
    namespace: str
    name: str
    created_at: str
    detail: str

    def as_status(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "createdAt": self.created_at, "detail": self.detail}


def grant_window(status: Mapping[str, Any]) -> tuple[datetime, datetime] | None:
    """[startedAt, endedAt] of a grant that was active and has ended; None otherwise."""
    if status.get("state") not in ("Expired", "Revoked") or not status.get("startedAt") or not status.get("endedAt"):
        return None
    try:
        return parse_instant(str(status["startedAt"])), parse_instant(str(status["endedAt"]))
    except ValueError:
        return None


def creatable_kinds(rules: Sequence[Mapping[str, Any]]) -> set[str]:
    """The leftover kinds the role lets its holder create (wildcards included)."""
    kinds = set()
    for rule in resource_rules(rules):
        if not {"create", "*"} & set(rule.verbs):
            continue
        for kind, (group, resource, _) in _CREATED_BY.items():
            if {group, "*"} & set(rule.api_groups) and {resource, "*"} & set(rule.resources):
                kinds.add(kind)
    return kinds


def _detail(kind: str, obj: Mapping[str, Any]) -> str | None:
    """Why the object matters, or None when it is not a leftover of interest."""
    metadata = obj.get("metadata") or {}
    if kind == "Secret":
        account = (metadata.get("annotations") or {}).get(TOKEN_SECRET_ANNOTATION)
        return f"a long-lived token of ServiceAccount {account}" if account else None
    if kind == "RoleBinding":
        role = obj.get("roleRef") or {}
        subjects = ", ".join(
            f"{s.get('kind')} {s.get('namespace') + '/' if s.get('namespace') else ''}{s.get('name')}"
            for s in obj.get("subjects") or []
        )
        return f"binds {role.get('kind')}/{role.get('name')} to {subjects or 'nobody'}"
    if kind == "Pod":
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return None
        account = (obj.get("spec") or {}).get("serviceAccountName") or "default"
        return f"a Pod still running as ServiceAccount {account}"
    return None


def find_leftovers(
    request: Mapping[str, Any], role_rules: Sequence[Mapping[str, Any]], objects: Iterable[Mapping[str, Any]]
) -> list[Leftover]:
    """The objects (of the grant's namespace) a request's ended window may have left behind, oldest first."""
    window = grant_window(request.get("status") or {})
    if window is None:
        return []
    start, end = window
    namespace = str((request.get("metadata") or {}).get("namespace") or "")
    kinds = creatable_kinds(role_rules)
    if not kinds:
        return []
    # Kubernetes writes creationTimestamp as YYYY-MM-DDTHH:MM:SSZ, which sorts as text: parse only the window's.
    first, last = start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")
    found = []
    for obj in objects:
        kind = str(obj.get("kind") or "")
        metadata = obj.get("metadata") or {}
        if kind not in kinds or str(metadata.get("namespace") or "") != namespace:
            continue
        if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
            continue  # the operator's own (the grant binding itself among them)
        text = str(metadata.get("creationTimestamp") or "")
        if len(text) == len(first) and text.endswith("Z") and not first <= text <= last:
            continue
        try:
            created = parse_instant(str(metadata.get("creationTimestamp") or ""))
        except ValueError:
            continue
        if not start <= created <= end:
            continue
        detail = _detail(kind, obj)
        if detail is not None:
            stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
            found.append(Leftover(kind, namespace, str(metadata.get("name") or ""), stamp, detail))
    return sorted(found, key=lambda item: (item.created_at, item.kind, item.name))


def leftover_findings(request: Mapping[str, Any], leftovers: Iterable[Leftover]) -> list[Finding]:
    metadata = request.get("metadata") or {}
    status = request.get("status") or {}
    name = str(metadata.get("name") or "")
    requester = str(((request.get("spec") or {}).get("requester") or {}).get("username") or "")
    window = f"{status.get('startedAt')} to {status.get('endedAt')}"
    return [
        Finding(
            rule_id=LEFTOVER_RULE_ID,
            severity=LEFTOVER_SEVERITY,
            namespace=item.namespace,
            object=ObjectRef(
                kind=item.kind, name=item.name, namespace=item.namespace, api_version=_CREATED_BY[item.kind][2]
            ),
            message=(
                f"{item.kind} {item.name} ({item.detail}) was created at {item.created_at}, inside the window "
                f"({window}) of AccessRequest {name} ({status.get('role')} for {requester}), and outlives it"
            ),
        )
        for item in leftovers
    ]
