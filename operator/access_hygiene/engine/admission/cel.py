"""The CEL vocabulary of the admission policies: quoting, the exemption annotations and their
parameters, binding subjects, pod specs, and grants of a capability pattern, each built from the same constants
as the Python checks (capabilities.py, exemptions.py)."""

import json
from collections.abc import Iterable

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.exemptions import (
    EXEMPT_ANNOTATION,
    EXEMPT_OWNER_ANNOTATION,
    EXEMPT_REASON_ANNOTATION,
    EXEMPT_UNTIL_ANNOTATION,
    Exemption,
    exemptions_in,
)
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, meta, namespace_of
from access_hygiene.engine.rbac.capabilities import Pattern
from access_hygiene.engine.rbac.permissions import AUTOUPDATE_ANNOTATION, BOOTSTRAP_LABEL, SA_USER_PREFIX

RBAC_GROUP = "rbac.authorization.k8s.io"


_EXEMPT_RULE_PATTERN = "^AH-(RBAC|SA|NET|POD|GOV)(-[0-9]{3})?$"
_DATE_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_TZ = "([Zz]|[+-][0-9]{2}:[0-9]{2})$"
_DATETIME_SECONDS = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?" + _TZ
_DATETIME_MINUTES = "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}" + _TZ


def cel(value: str) -> str:
    """A CEL string literal."""
    return json.dumps(value)


def cel_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(cel(v) for v in values) + "]"


def listed(field: str) -> str:
    """CEL: the list an optional field read (`r.?verbs`) holds, [] when the field is absent, null or empty.

    `x.?f.orValue([])` alone is not enough: it yields null when the field is present with a null value, and
    the API server hands admission exactly that for list fields its Go types serialise without omitempty
    (a Role or ClusterRole written without `rules`, or with `rules: null`, arrives with `rules: null`;
    PolicyRule `verbs` and PodSpec `containers` are the others). Every list a compiled form reads goes
    through here, whether its field can be null today or not."""
    return f"optional.ofNonZeroValue({field}.orValue([])).orValue([])"


def _rule_items(text: str) -> str:
    return f"{text}.split(',').map(x, x.trim().upperAscii()).filter(x, x != '')"


def _covers(items: str, rule_id: str) -> str:
    family = "-".join(rule_id.split("-")[:2])
    return f"{items}.exists(x, x == '*' || x == {cel(rule_id)} || x == {cel(family)})"


def _until_active(value: str) -> str:
    """An exempt-until value later than the operator's clock (variables.now), formats as parse_until."""
    now = "variables.now"
    return (
        f"({value}.matches({cel(_DATE_PATTERN)}) && timestamp({value} + 'T00:00:00Z') + duration('24h') > {now}) || "
        f"({value}.matches({cel(_DATETIME_SECONDS)}) && "
        f"timestamp({value}.substring(0, 10) + 'T' + {value}.substring(11).upperAscii()) > {now}) || "
        f"({value}.matches({cel(_DATETIME_MINUTES)}) && timestamp({value}.substring(0, 10) + 'T' + "
        f"{value}.substring(11, 16) + ':00' + {value}.substring(16).upperAscii()) > {now})"
    )


def _exemption_of(annotations: str) -> str:
    """CEL: the rule items of a well-formed, active exemption in the annotation map (parse_exemption and
    Exemption.is_active), else []."""
    items = _rule_items(f"{annotations}[{cel(EXEMPT_ANNOTATION)}]")
    until = f"{annotations}[?{cel(EXEMPT_UNTIL_ANNOTATION)}].orValue('').trim()"
    valid = (
        f"{cel(EXEMPT_ANNOTATION)} in {annotations} && size({items}) > 0 && "
        f"{items}.all(x, x == '*' || x.matches({cel(_EXEMPT_RULE_PATTERN)})) && "
        f"{annotations}[?{cel(EXEMPT_OWNER_ANNOTATION)}].orValue('').trim() != '' && "
        f"{annotations}[?{cel(EXEMPT_REASON_ANNOTATION)}].orValue('').trim() != '' && "
        f"({_until_active(until)})"
    )
    return f"({valid}) ? {items} : []"


# Shared by every rule policy; evaluated lazily, so only for objects that violate the rule.
EXEMPTION_VARIABLES = (
    ("objectExemption", _exemption_of("object.metadata.?annotations.orValue({})")),
    (
        "namespaceExemption",
        f"namespaceObject == null ? [] : ({_exemption_of('namespaceObject.metadata.?annotations.orValue({})')})",
    ),
    (
        "ownerExemption",
        f"{listed('object.metadata.?ownerReferences')}.map(r, r.kind + '.' + object.metadata.?namespace.orValue('') "
        f"+ '.' + r.name).filter(k, k in variables.ownerExemptions)"
        f".map(k, {_rule_items('variables.ownerExemptions[k]')}).flatten()",
    ),
)


def exemption_cel(rule_id: str) -> str:
    """The object's own exemption, its namespace's, or (from the parameters the operator keeps in the
    policy) an active exemption of an owner of the object covers rule_id."""
    return " || ".join(_covers(f"variables.{name}", rule_id) for name, _ in EXEMPTION_VARIABLES)


def exemption_parameters(snapshot: ClusterSnapshot, ctx: AuditContext) -> dict[str, str]:
    """The owner-exemption parameters: for every active exemption on an object (not a Namespace:
    admission reads those itself), the object and everything it owns in the snapshot (owner chains as
    apply_exemptions walks them), key Kind.namespace.name -> comma-separated sorted rule list."""
    active: dict[tuple[str, str, str], set[str]] = {}
    for item in exemptions_in(snapshot):
        if isinstance(item, Exemption) and item.is_active(ctx.now) and item.target.kind != "Namespace":
            key = (item.target.kind, item.target.namespace, item.target.name)
            active.setdefault(key, set()).update(item.rules)
    owned = _owned_objects(snapshot)
    result: dict[tuple[str, str, str], set[str]] = {}
    pending = list(active.items())
    for _ in range(4):  # owner depth, as exemptions._OWNER_DEPTH
        following: list[tuple[tuple[str, str, str], set[str]]] = []
        for key, rules in pending:
            result.setdefault(key, set()).update(rules)
            following.extend((child, rules) for child in owned.get(key, []))
        pending = following
    return {f"{kind}.{ns}.{name}": ",".join(sorted(rules)) for (kind, ns, name), rules in sorted(result.items())}


def _owned_objects(snapshot: ClusterSnapshot) -> dict[tuple[str, str, str], list[tuple[str, str, str]]]:
    owned: dict[tuple[str, str, str], list[tuple[str, str, str]]] = {}
    for obj in [*snapshot.pods, *snapshot.workloads]:
        namespace = namespace_of(obj)
        child = (str(obj.get("kind", "")), namespace, str(meta(obj).get("name") or ""))
        for ref in meta(obj).get("ownerReferences") or []:
            if isinstance(ref, dict):
                owned.setdefault((str(ref.get("kind", "")), namespace, str(ref.get("name", ""))), []).append(child)
    return owned


NOT_BOOTSTRAP = (
    f"!(object.metadata.?labels[?{cel(BOOTSTRAP_LABEL[0])}].orValue('') == {cel(BOOTSTRAP_LABEL[1])} && "
    f"object.metadata.?annotations[?{cel(AUTOUPDATE_ANNOTATION)}].orValue('') != 'false')"
)
# Binding subjects as the RBAC authorizer reads them (permissions._subjects_of), with user names.
SUBJECTS = (
    f"{listed('object.?subjects')}.filter(s, s.kind in ['User', 'Group'] || (s.kind == 'ServiceAccount' && "
    "(s.?namespace.orValue('') != '' || object.metadata.?namespace.orValue('') != '')))"
    ".map(s, {'kind': s.kind, 'name': s.name, 'namespace': s.kind != 'ServiceAccount' ? '' : "
    "(s.?namespace.orValue('') != '' ? s.namespace : object.metadata.namespace)})"
)
SUBJECT_VARIABLES = (
    ("subjects", SUBJECTS),
    (
        "included",
        f"variables.subjects.filter(s, !variables.excludedPrefixes.exists(p, "
        f"(s.kind == 'ServiceAccount' ? {cel(SA_USER_PREFIX)} + s.namespace + ':' + s.name : s.name).startsWith(p)))",
    ),
)
POD_SPEC = (
    "object.kind == 'Pod' ? object.spec : (object.kind == 'CronJob' ? "
    "object.spec.?jobTemplate.?spec.?template.?spec.orValue({}) : object.spec.?template.?spec.orValue({}))"
)
POD_VARIABLES = (
    ("podSpec", POD_SPEC),
    (
        "containers",
        f"['initContainers', 'containers', 'ephemeralContainers'].map(k, {listed('variables.podSpec[?k]')}).flatten()",
    ),
)
# A role's own rules (an aggregating ClusterRole's are overwritten by the controller: judged through its sources).
OWN_RULES = f"(has(object.aggregationRule) ? [] : {listed('object.?rules')})"


def grants_cel(rule: str, pattern: Pattern, *, include_named: bool = False) -> str:
    """CEL twin of capabilities.rule_grants: does the PolicyRule `rule` grant any combination of the pattern?"""
    verbs, groups, resources = pattern
    subresources = sorted({r.partition("/")[2] for r in resources if "/" in r})
    resource_names = [*resources, *(f"*/{s}" for s in subresources)]
    checks = [
        f"{listed(f'{rule}.?verbs')}.exists(v, v == '*' || v in {cel_list(verbs)})",
        f"{listed(f'{rule}.?apiGroups')}.exists(g, g == '*' || g in {cel_list(groups)})",
        f"{listed(f'{rule}.?resources')}.exists(x, x == '*' || x in {cel_list(resource_names)})",
    ]
    if not include_named:
        checks.insert(0, f"size({listed(f'{rule}.?resourceNames')}) == 0")
    return "(" + " && ".join(checks) + ")"


def has_wildcard_cel(rule: str) -> str:
    keys = ("verbs", "resources", "apiGroups", "nonResourceURLs")
    return "(" + " || ".join(f"{listed(f'{rule}.?{k}')}.exists(x, x == '*')" for k in keys) + ")"
