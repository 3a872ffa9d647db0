"""AH-GOV-005: what a just-in-time grant's window may have left behind, and what enforce mode removes.

Access granted for a window can be kept past it: a ServiceAccount token Secret minted, a RoleBinding written, a
Pod left running as some ServiceAccount. After a grant ends (Expired or Revoked, having been Active), each such
object in the grant's namespace that was created inside the window, still exists, is not the operator's own, and
is of a kind the granted role could create there, is reported. A ClusterRoleBinding is never one: a grant is a
RoleBinding, which confers namespaced permissions only.

Who created it: the API server records no creator on an object (managedFields name the client program), so
admission stamps one: a MutatingAdmissionPolicy writes the creating user's name into the
accesshygiene.io/created-by annotation of every Secret and RoleBinding on create and keeps it unchanged on update
(render/access_admission.py). The finding lists it; the request's status.leftovers (the grant's record) keeps
each object's uid and creator.

What enforce mode removes (removable_leftovers): only a Secret or RoleBinding listed in that record, created by
the requester (the stamp), inside the window, still live with the recorded uid and the same stamp, and not the
operator's own; deleted with a uid precondition. A Pod is reported, never removed (its owner may recreate it, and
stopping a workload is a person's decision). An object without a stamp (created before the policy existed, or
where kube-apiserver does not serve MutatingAdmissionPolicy) is reported and never removed.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from access_hygiene import MANAGED_BY_LABEL, MANAGED_BY_VALUE
from access_hygiene.clock import parse_instant
from access_hygiene.engine.access.risk import resource_rules
from access_hygiene.models.access import CREATED_BY_ANNOTATION
from access_hygiene.models.findings import Finding, ObjectRef, Severity

LEFTOVER_RULE_ID = "AH-GOV-005"
LEFTOVER_SEVERITY = Severity.HIGH
LEFTOVER_TITLE = "Object created during a just-in-time grant outlives it"
TOKEN_SECRET_ANNOTATION = "kubernetes.io/service-account.name"
MAX_LEFTOVERS = 20  # listed in a request's status; the findings carry all
REMOVABLE_KINDS = ("Secret", "RoleBinding")  # what enforce mode may delete; a Pod is only reported
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
    uid: str = ""
    created_by: str = ""  # the admission stamp; "" when the object has none
    removed_at: str = ""  # when enforce mode removed it

    def as_status(self) -> dict[str, str]:
        item = {"kind": self.kind, "name": self.name, "createdAt": self.created_at, "detail": self.detail}
        extra = {"uid": self.uid, "createdBy": self.created_by, "removedAt": self.removed_at}
        return {**item, **{key: value for key, value in extra.items() if value}}

    @classmethod
    def from_status(cls, namespace: str, item: Mapping[str, Any]) -> "Leftover":
        return cls(
            kind=str(item.get("kind") or ""),
            namespace=namespace,
            name=str(item.get("name") or ""),
            created_at=str(item.get("createdAt") or ""),
            detail=str(item.get("detail") or ""),
            uid=str(item.get("uid") or ""),
            created_by=str(item.get("createdBy") or ""),
            removed_at=str(item.get("removedAt") or ""),
        )


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
            creator = str((metadata.get("annotations") or {}).get(CREATED_BY_ANNOTATION) or "")
            name = str(metadata.get("name") or "")
            found.append(Leftover(kind, namespace, name, stamp, detail, str(metadata.get("uid") or ""), creator))
    return sorted(found, key=lambda item: (item.created_at, item.kind, item.name))


def _requester(request: Mapping[str, Any]) -> str:
    return str(((request.get("spec") or {}).get("requester") or {}).get("username") or "")


def leftover_findings(request: Mapping[str, Any], leftovers: Iterable[Leftover]) -> list[Finding]:
    metadata = request.get("metadata") or {}
    status = request.get("status") or {}
    name = str(metadata.get("name") or "")
    window = f"{status.get('startedAt')} to {status.get('endedAt')}"
    grant = f"AccessRequest {name} ({status.get('role')} for {_requester(request)})"
    findings = []
    for item in leftovers:
        by = f" by {item.created_by}" if item.created_by else ""
        made = f"{item.kind} {item.name} ({item.detail}) was created{by} at {item.created_at}"
        fate = f"outlived it: removed at {item.removed_at} (enforce mode)" if item.removed_at else "outlives it"
        findings.append(
            Finding(
                rule_id=LEFTOVER_RULE_ID,
                severity=LEFTOVER_SEVERITY,
                namespace=item.namespace,
                object=ObjectRef(
                    kind=item.kind, name=item.name, namespace=item.namespace, api_version=_CREATED_BY[item.kind][2]
                ),
                message=f"{made}, inside the window ({window}) of {grant}, and {fate}",
            )
        )
    return findings


def recorded_leftovers(request: Mapping[str, Any]) -> list[Leftover]:
    """The grant's record: the leftovers listed in the request's status as the API server holds it."""
    namespace = str((request.get("metadata") or {}).get("namespace") or "")
    items = (request.get("status") or {}).get("leftovers") or []
    return [Leftover.from_status(namespace, item) for item in items if isinstance(item, Mapping)]


def removal_refusal(request: Mapping[str, Any], item: Leftover, live: Mapping[str, Any] | None) -> str | None:
    """Why enforce mode must not delete this recorded leftover; None when it may (and then only with `item.uid`
    as the delete's precondition)."""
    window = grant_window(request.get("status") or {})
    requester = _requester(request)
    if window is None:
        return "the grant has not ended"
    if item.removed_at:
        return f"already removed at {item.removed_at}"
    if item.kind not in REMOVABLE_KINDS:
        return f"a {item.kind} is reported, never removed"
    if not item.uid:
        return "no uid recorded"
    if not item.created_by:
        return f"no {CREATED_BY_ANNOTATION} stamp: its creator is unknown"
    if item.created_by != requester:
        return f"created by {item.created_by}, not by the requester {requester}"
    if live is None:
        return "no longer exists"
    metadata = live.get("metadata") or {}
    if str(live.get("kind") or item.kind) != item.kind or str(metadata.get("name") or "") != item.name:
        return "not the recorded object"
    if str(metadata.get("uid") or "") != item.uid:
        return f"replaced since it was recorded (uid {metadata.get('uid')}, recorded {item.uid})"
    if (metadata.get("annotations") or {}).get(CREATED_BY_ANNOTATION) != requester:
        return f"its {CREATED_BY_ANNOTATION} stamp no longer names the requester"
    if (metadata.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE:
        return "the operator's own"
    try:
        created = parse_instant(str(metadata.get("creationTimestamp") or ""))
    except ValueError:
        return "no creation time"
    if not window[0] <= created <= window[1]:
        return "created outside the grant's window"
    return None


def removable_leftovers(
    request: Mapping[str, Any], live: Callable[[str, str], Mapping[str, Any] | None]
) -> list[Leftover]:
    """What enforce mode deletes: the recorded leftovers (the request's status as stored) that removal_refusal
    allows, each checked against the live object `live(kind, name)` of the request's namespace."""
    return [item for item in recorded_leftovers(request) if removal_refusal(request, item, live(item.kind, item.name))
            is None]  # fmt: skip
