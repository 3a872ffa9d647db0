"""Exemptions: operator configuration plus per-namespace / per-object annotations that always expire.

An annotated object (or Namespace) carries:

    accesshygiene.io/exempt:        "*", or comma-separated rule ids / families (AH-NET-001, AH-POD)
    accesshygiene.io/exempt-owner:  who is accountable (team, person)
    accesshygiene.io/exempt-reason: why
    accesshygiene.io/exempt-until:  RFC3339 datetime with offset, or a date (valid through that day, UTC)

All four are required. An exemption on a Namespace covers every finding in it; on an object it
covers that object and the objects it owns (a Deployment's exemption covers its ReplicaSets and
Pods). Expired exemptions stop applying and are reported (AH-GOV-002); malformed ones never apply
and are reported (AH-GOV-003). Neither of those two can itself be exempted.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, Obj, labels_of, meta, name_of, namespace_of
from access_hygiene.engine.ground.workloads import hygiene_index
from access_hygiene.models.findings import Finding, ObjectRef, Severity

EXEMPT_ANNOTATION = "accesshygiene.io/exempt"
EXEMPT_REASON_ANNOTATION = "accesshygiene.io/exempt-reason"
EXEMPT_OWNER_ANNOTATION = "accesshygiene.io/exempt-owner"
EXEMPT_UNTIL_ANNOTATION = "accesshygiene.io/exempt-until"
_COMPANIONS = (EXEMPT_OWNER_ANNOTATION, EXEMPT_REASON_ANNOTATION, EXEMPT_UNTIL_ANNOTATION)

EXPIRED_RULE_ID = "AH-GOV-002"
EXPIRED_SEVERITY = Severity.LOW
MALFORMED_RULE_ID = "AH-GOV-003"
MALFORMED_SEVERITY = Severity.MEDIUM
_BOOKKEEPING_RULES = frozenset({EXPIRED_RULE_ID, MALFORMED_RULE_ID})

EXEMPTION_STATES = ("active", "expired", "invalid")

_RULE_ID = re.compile(r"^AH-(RBAC|SA|NET|POD|GOV)(-[0-9]{3})?$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
_TIMEZONE = re.compile(r"([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_OWNER_DEPTH = 4  # Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, with room to spare


@dataclass(frozen=True)
class Exemption:
    rules: frozenset[str]  # "*", exact ids (AH-NET-001) or families (AH-NET)
    owner: str
    reason: str
    until: datetime  # the first instant it no longer applies (a bare date: the next midnight UTC)
    target: ObjectRef
    until_text: str = field(default="", compare=False)  # exempt-until as the user wrote it

    def covers(self, rule_id: str) -> bool:
        """Does it exempt rule_id? covers("*") is true only for a blanket ("*") exemption."""
        if "*" in self.rules or rule_id in self.rules:
            return True
        return any(rule_id.startswith(f"{family}-") for family in self.rules if family.count("-") == 1)

    def is_active(self, now: datetime) -> bool:
        return _aware(now) < self.until

    def describe(self) -> str:
        rules = ",".join(sorted(self.rules))
        return f"{rules} by {self.owner} until {self.until_shown()}: {self.reason}"

    def until_shown(self) -> str:
        """What the user wrote; a bare date is inclusive (valid through that day, UTC) and says so."""
        text = self.until_text.strip()
        if not text:
            return self.until.isoformat()
        return f"{text} (through that day, UTC)" if _DATE.match(text) else text


@dataclass(frozen=True)
class ExemptionError:
    """Exemption annotations present but unusable; message says precisely what is wrong."""

    target: ObjectRef
    message: str


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def target_of(obj: Mapping[str, Any]) -> ObjectRef:
    body = dict(obj)
    return ObjectRef(
        kind=str(body.get("kind") or ""),
        name=name_of(body),
        namespace=namespace_of(body),
        api_version=str(body.get("apiVersion") or ""),
    )


def parse_rule_ids(text: str) -> frozenset[str] | str:
    """The rule set of an exempt annotation, or an error message."""
    items = [item.strip().upper() for item in text.split(",") if item.strip()]
    if not items:
        return f"{EXEMPT_ANNOTATION} is empty (want *, or rule ids such as AH-NET-001 or families such as AH-POD)"
    unknown = [item for item in items if item != "*" and not _RULE_ID.match(item)]
    if unknown:
        listed = ", ".join(repr(item) for item in unknown)
        return f"{EXEMPT_ANNOTATION} names unknown rule id(s) {listed} (want *, AH-<RBAC|SA|NET|POD|GOV>[-NNN])"
    return frozenset(items)


def parse_until(text: str) -> datetime | str:
    """When an exemption stops applying, or an error message. A bare date is valid through that day (UTC)."""
    value = text.strip()
    try:
        if _DATE.match(value):
            return datetime.combine(date.fromisoformat(value) + timedelta(days=1), time(), tzinfo=UTC)
        if _DATETIME.match(value):
            if not _TIMEZONE.search(value):
                return f"{EXEMPT_UNTIL_ANNOTATION} {value!r} has no timezone (add Z or an offset such as +02:00)"
            normalised = value[:10] + "T" + value[11:]
            normalised = normalised[:-1] + "+00:00" if normalised[-1] in "Zz" else normalised
            return datetime.fromisoformat(normalised).astimezone(UTC)
    except (ValueError, OverflowError):
        return f"{EXEMPT_UNTIL_ANNOTATION} {value!r} is not a valid date"
    example = "e.g. 2030-01-31 or 2030-01-31T12:00:00Z"
    return f"{EXEMPT_UNTIL_ANNOTATION} {value!r} is not an RFC3339 date or datetime ({example})"


_ALL_ANNOTATIONS = (EXEMPT_ANNOTATION, *_COMPANIONS)


def parse_exemption(obj: Mapping[str, Any]) -> Exemption | ExemptionError | None:
    """The exemption an object's annotations declare; None when it has none. Never raises."""
    metadata = obj.get("metadata")
    raw = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(raw, dict) or not any(key in raw for key in _ALL_ANNOTATIONS):
        return None  # most objects: no exemption annotation (keys compared as _annotations() converts them)
    body = dict(obj)
    annotations = _annotations(body)
    target = target_of(body)
    if EXEMPT_ANNOTATION not in annotations:
        stray = [key for key in _COMPANIONS if key in annotations]
        if stray:
            return ExemptionError(target, f"{', '.join(stray)} set without {EXEMPT_ANNOTATION}")
        return None
    problems: list[str] = []
    rules = parse_rule_ids(annotations[EXEMPT_ANNOTATION])
    if isinstance(rules, str):
        problems.append(rules)
    owner = annotations.get(EXEMPT_OWNER_ANNOTATION, "").strip()
    reason = annotations.get(EXEMPT_REASON_ANNOTATION, "").strip()
    if not owner:
        problems.append(f"{EXEMPT_OWNER_ANNOTATION} is missing or empty")
    if not reason:
        problems.append(f"{EXEMPT_REASON_ANNOTATION} is missing or empty")
    until: datetime | str = f"{EXEMPT_UNTIL_ANNOTATION} is missing (exemptions must expire)"
    if EXEMPT_UNTIL_ANNOTATION in annotations:
        until = parse_until(annotations[EXEMPT_UNTIL_ANNOTATION])
    if isinstance(until, str):
        problems.append(until)
    if problems or isinstance(rules, str) or isinstance(until, str):
        return ExemptionError(target, "; ".join(problems))
    written = annotations[EXEMPT_UNTIL_ANNOTATION]
    return Exemption(rules=rules, owner=owner, reason=reason, until=until, target=target, until_text=written)


def _annotations(obj: Obj) -> dict[str, str]:
    value = meta(obj).get("annotations")
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}


_OBJECT_LISTS = (
    "namespaces",
    "service_accounts",
    "pods",
    "roles",
    "cluster_roles",
    "role_bindings",
    "cluster_role_bindings",
    "network_policies",
    "secrets",
    "access_policies",
    "workloads",
)


def _objects(snapshot: ClusterSnapshot) -> Iterator[Obj]:
    for ns in snapshot.namespaces:
        yield {"apiVersion": "v1", "kind": "Namespace", **ns}
    for attr in _OBJECT_LISTS[1:]:
        yield from (obj for obj in getattr(snapshot, attr) if isinstance(obj, dict))


def exemptions_in(snapshot: ClusterSnapshot) -> list[Exemption | ExemptionError]:
    """Every exemption (valid or not) declared on namespaces and objects of the snapshot."""
    found = [parsed for obj in _objects(snapshot) if (parsed := parse_exemption(obj)) is not None]
    return sorted(found, key=lambda e: (e.target.namespace, e.target.kind, e.target.name))


def _exemptions_cached(snapshot: ClusterSnapshot, ctx: AuditContext) -> list[Exemption | ExemptionError]:
    """exemptions_in, once per audit (ctx.cache["exemptions"], keyed by the snapshot object)."""
    cached = ctx.cache.get("exemptions")
    if isinstance(cached, tuple) and cached[0] is snapshot and cached[1] == _size(snapshot):
        result: list[Exemption | ExemptionError] = cached[2]
        return result
    found = exemptions_in(snapshot)
    ctx.cache["exemptions"] = (snapshot, _size(snapshot), found)
    return found


def _size(snapshot: ClusterSnapshot) -> int:
    """How many objects the snapshot holds (the cache is rebuilt when objects were added meanwhile)."""
    return sum(len(getattr(snapshot, attr)) for attr in _OBJECT_LISTS)


def _selector_of(ctx: AuditContext) -> dict[str, str]:
    # Forward-compatible: AuditContext may carry the configured namespace label selector.
    raw = getattr(ctx, "exempt_namespace_selector", None)
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, tuple | list):
        return {str(k): str(v) for k, v in raw}
    return {}


def namespace_exempt_by_config(namespace: Mapping[str, Any], ctx: AuditContext) -> bool:
    """Exempt by the operator's configuration (name list or label selector): governs nothing there."""
    body = dict(namespace)
    if name_of(body) in ctx.exempt_namespaces:
        return True
    selector = _selector_of(ctx)
    labels = labels_of(body)
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def namespace_is_exempt(namespace: Mapping[str, Any], ctx: AuditContext, now: datetime, rule_id: str = "*") -> bool:
    """Config-exempt, or an active annotation on the Namespace covering rule_id ("*" = a blanket exemption)."""
    if namespace_exempt_by_config(namespace, ctx):
        return True
    parsed = parse_exemption(namespace)
    return isinstance(parsed, Exemption) and parsed.is_active(now) and parsed.covers(rule_id)


ObjKey = tuple[str, str, str]  # (kind, namespace, name)


def _key(kind: str, namespace: str, name: str) -> ObjKey:
    return (kind, namespace, name)


def _owner_chain(obj_key: ObjKey, by_key: Mapping[ObjKey, Obj]) -> Iterator[ObjKey]:
    current = by_key.get(obj_key)
    for _ in range(_OWNER_DEPTH):
        if current is None:
            return
        refs = [r for r in meta(current).get("ownerReferences") or [] if isinstance(r, dict)]
        owner = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
        if owner is None:
            return
        owner_key = _key(str(owner.get("kind", "")), namespace_of(current), str(owner.get("name", "")))
        yield owner_key
        current = by_key.get(owner_key)


def bookkeeping_findings(snapshot: ClusterSnapshot, ctx: AuditContext) -> list[Finding]:
    """AH-GOV-002 for expired exemptions and AH-GOV-003 for malformed ones."""
    findings: list[Finding] = []
    for item in _exemptions_cached(snapshot, ctx):
        target = item.target
        namespace = target.name if target.kind == "Namespace" else target.namespace
        where = f"{target.kind} {target.name}" + (f" in {target.namespace}" if target.namespace else "")
        if isinstance(item, ExemptionError):
            findings.append(
                Finding(
                    rule_id=MALFORMED_RULE_ID,
                    severity=MALFORMED_SEVERITY,
                    namespace=namespace,
                    object=target,
                    message=f"Exemption on {where} is ignored: {item.message}",
                )
            )
        elif not item.is_active(ctx.now):
            findings.append(
                Finding(
                    rule_id=EXPIRED_RULE_ID,
                    severity=EXPIRED_SEVERITY,
                    namespace=namespace,
                    object=target,
                    message=f"Exemption on {where} expired and no longer applies ({item.describe()})",
                )
            )
    return findings


def apply_exemptions(findings: list[Finding], snapshot: ClusterSnapshot, ctx: AuditContext) -> list[Finding]:
    """Mark findings covered by an active exemption (on the object, an owner of it, or its namespace)
    and append AH-GOV-002/003 findings for expired/malformed exemptions not already present."""
    result = mark_exempted(findings, snapshot, ctx)
    bookkeeping = bookkeeping_findings(snapshot, ctx)
    if bookkeeping:
        present = {f.key for f in result}
        result.extend(f for f in bookkeeping if f.key not in present)
    return result


def mark_exempted(findings: list[Finding], snapshot: ClusterSnapshot, ctx: AuditContext) -> list[Finding]:
    """The findings in the same order, those covered by an active exemption (on the object, an owner of
    it, or its namespace) marked exempted (the rest are the same objects)."""
    active: dict[ObjKey, list[Exemption]] = {}
    for item in _exemptions_cached(snapshot, ctx):
        if isinstance(item, Exemption) and item.is_active(ctx.now):
            target = item.target
            active.setdefault(_key(target.kind, target.namespace, target.name), []).append(item)
    if not active:
        return list(findings)
    by_key = {_key(str(o.get("kind", "")), namespace_of(o), name_of(o)): o for o in _objects(snapshot)}

    result: list[Finding] = []
    for finding in findings:
        exemption = None
        if finding.rule_id not in _BOOKKEEPING_RULES and not finding.exempted:
            exemption = _covering(finding, active, by_key)
        if exemption is None:
            result.append(finding)
        else:
            reason = f"exempted by {exemption.target.kind} {exemption.target.name}: {exemption.describe()}"
            result.append(finding.model_copy(update={"exempted": True, "exemption_reason": reason}))
    return result


def _covering(
    finding: Finding,
    active: Mapping[ObjKey, list[Exemption]],
    by_key: Mapping[ObjKey, Obj],
) -> Exemption | None:
    obj = finding.object
    own = _key(obj.kind, obj.namespace, obj.name)
    candidates = [own, *_owner_chain(own, by_key)]
    namespace = obj.name if obj.kind == "Namespace" else (finding.namespace or obj.namespace)
    if namespace:
        candidates.append(_key("Namespace", "", namespace))
    for candidate in candidates:
        for exemption in active.get(candidate, []):
            if exemption.covers(finding.rule_id):
                return exemption
    return None


def exemption_counts(snapshot: ClusterSnapshot, ctx: AuditContext) -> dict[str, int]:
    """Exemptions by state (active, expired, invalid), every state present, for access_hygiene_exemptions."""
    counts = dict.fromkeys(EXEMPTION_STATES, 0)
    for item in _exemptions_cached(snapshot, ctx):
        if isinstance(item, ExemptionError):
            counts["invalid"] += 1
        elif item.is_active(ctx.now):
            counts["active"] += 1
        else:
            counts["expired"] += 1
    return counts


def exempt_by_config(snapshot: ClusterSnapshot, ctx: AuditContext, namespace: str) -> bool:
    """Namespaces the operator's configuration exempts: the hygiene rules skip them entirely."""
    index = hygiene_index(snapshot, ctx)
    if namespace not in index.config_exempt:
        ns_obj = index.namespaces.get(namespace, {"metadata": {"name": namespace}})
        index.config_exempt[namespace] = namespace_exempt_by_config(ns_obj, ctx)
    return index.config_exempt[namespace]
