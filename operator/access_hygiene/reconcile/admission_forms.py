"""Admission forms of the catalogue rules: for every rule whose verdict depends on the incoming object
alone, its CEL, built here from the same constants the Python checks use (capability patterns from
permissions.py, exemption annotations and formats from exemptions.py). One registration per rule id;
render/admission.py turns them into ValidatingAdmissionPolicies. The effective-permission rules have a form on
the role being written instead, in the opt-in role-capabilities profile (one policy for all of them).

The differential test (tests/cluster/test_admission.py) holds each form to the audit engine:
`run_audit(ClusterSnapshot.from_objects([obj, *context]), ctx, only=[rule_id])` (for a profile form: over the
role and a binding of it) and a server-side dry-run of the same object must agree.

Also here: the AccessPolicy guards (the requester must hold what a policy grants, checked with CEL's
`authorizer`; rules outside the grant ceiling), the automount mutation, and the exemption parameters.
"""

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from access_hygiene.reconcile.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.reconcile.ceiling import READ_VERBS as CEILING_READ_VERBS
from access_hygiene.reconcile.ceiling import WRITE_VERBS as CEILING_WRITE_VERBS
from access_hygiene.reconcile.exemptions import (
    EXEMPT_ANNOTATION,
    EXEMPT_OWNER_ANNOTATION,
    EXEMPT_REASON_ANNOTATION,
    EXEMPT_UNTIL_ANNOTATION,
    Exemption,
    exemptions_in,
)
from access_hygiene.reconcile.permissions import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    AUTOUPDATE_ANNOTATION,
    BIND,
    BOOTSTRAP_LABEL,
    CONFIGMAP_WRITE,
    CREATE_PODS,
    CREATE_WORKLOADS,
    CSR_APPROVE,
    EPHEMERAL_CONTAINERS,
    ESCALATE,
    EVENTS_DELETE,
    EXEC,
    IMPERSONATE,
    MASTERS_GROUP,
    NODES_PROXY,
    PV_CREATE,
    RBAC_WRITE,
    READ_VERBS,
    SA_USER_PREFIX,
    SECRETS_READ,
    SECRETS_WRITE,
    SECRETS_WRITE_DELETE,
    SIGNER_APPROVE,
    TOKEN_CREATE,
    UNAUTHENTICATED_GROUP,
    WEBHOOK_WRITE,
    Pattern,
    PolicyRule,
    resolve_cluster_roles,
    rules_grant,
)
from access_hygiene.reconcile.rules import AuditContext, Rule
from access_hygiene.reconcile.rules.rbac_more import (
    ANY_RESOURCE_GROUPS,
    BROAD_DELETE_RESOURCES,
    NAMESPACED_REBIND,
    PORT_FORWARD,
    REBIND,
    TRAFFIC_KINDS,
)
from access_hygiene.reconcile.snapshot import ClusterSnapshot, meta, namespace_of
from access_hygiene.render.admission import AdmissionForm, GuardPolicy, MatchResource, MutationForm

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLE_RESOURCES = (MatchResource(RBAC_GROUP, "roles", True), MatchResource(RBAC_GROUP, "clusterroles", False))
BINDING_RESOURCES = (
    MatchResource(RBAC_GROUP, "rolebindings", True),
    MatchResource(RBAC_GROUP, "clusterrolebindings", False),
)
WORKLOAD_RESOURCES = (
    MatchResource("", "pods", True),
    MatchResource("apps", "deployments", True),
    MatchResource("apps", "replicasets", True),
    MatchResource("apps", "statefulsets", True),
    MatchResource("apps", "daemonsets", True),
    MatchResource("batch", "jobs", True),
    MatchResource("batch", "cronjobs", True),
)
SECRET_RESOURCES = (MatchResource("", "secrets", True),)
ACCESS_POLICY_RESOURCES = (MatchResource("accesshygiene.io", "accesspolicies", True),)
# How many (verb, resource, name) grants the authorizer check verifies per AccessPolicy: each check
# costs 350,000 of the 10,000,000 runtime budget per policy binding (one check per validation, so the
# message can name the grant; the per-expression limit of 1,000,000 would allow two).
AUTHORIZER_CHECK_COST = 350_000
RUNTIME_COST_BUDGET = 10_000_000
AUTHORIZER_LIMIT = 24
# Beyond this many (group, resource, verb, name) combinations the ceiling check is left to the operator
# (Ready=False, GrantCeilingExceeded), so admission stays within the per-expression cost limit.
CEILING_COMBINATION_LIMIT = 1024

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


# --- exemptions ------------------------------------------------------------------------------------


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


# --- shared CEL pieces ------------------------------------------------------------------------------

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
    """CEL twin of permissions.rule_grants: does the PolicyRule `rule` grant any combination of the pattern?"""
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


# --- the registry -------------------------------------------------------------------------------------


# The opt-in profile of role-level capability forms (docs/admission.md): off, warn everywhere, or deny in enforce
# namespaces (and for ClusterRoles when the default mode is enforce) like the core forms.
RoleCapabilities = Literal["off", "warn", "deny"]
ROLE_CAPABILITIES_PROFILE = "role-capabilities"


@dataclass(frozen=True)
class FormSpec:
    rule_id: str
    fix: str
    resources: tuple[MatchResource, ...]
    violation: str
    variables: tuple[tuple[str, str], ...] = ()
    match_conditions: tuple[tuple[str, str], ...] = ()
    profile: str = ""  # "" for the core forms (always installed), else the opt-in profile it belongs to


FORMS: dict[str, FormSpec] = {}


def admission_form(spec: FormSpec) -> FormSpec:
    """Register the admission form of one rule id (once)."""
    if spec.rule_id in FORMS:
        raise ValueError(f"admission form {spec.rule_id} registered twice")
    FORMS[spec.rule_id] = spec
    return spec


def _subject_named(kind: str, name: str) -> str:
    return f"variables.included.exists(s, s.kind == {cel(kind)} && s.name == {cel(name)})"


admission_form(
    FormSpec(
        "AH-RBAC-001",
        "bind a least-privilege Role instead of cluster-admin",
        BINDING_RESOURCES,
        f"{NOT_BOOTSTRAP} && object.roleRef.kind == 'ClusterRole' && object.roleRef.name == 'cluster-admin' && "
        "size(variables.included) > 0",
        SUBJECT_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-RBAC-002",
        f"remove the subjects {ANONYMOUS_USER} / {UNAUTHENTICATED_GROUP}",
        BINDING_RESOURCES,
        f"{NOT_BOOTSTRAP} && ({_subject_named('User', ANONYMOUS_USER)} || "
        f"{_subject_named('Group', UNAUTHENTICATED_GROUP)})",
        SUBJECT_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-RBAC-003",
        f"bind named users, groups or ServiceAccounts instead of {AUTHENTICATED_GROUP}",
        BINDING_RESOURCES,
        f"{NOT_BOOTSTRAP} && {_subject_named('Group', AUTHENTICATED_GROUP)}",
        SUBJECT_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-RBAC-004",
        f"remove the {MASTERS_GROUP} subject (it bypasses RBAC; the binding only hides who holds it)",
        BINDING_RESOURCES,
        f"{NOT_BOOTSTRAP} && {_subject_named('Group', MASTERS_GROUP)}",
        SUBJECT_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-RBAC-016",
        "list the verbs the subject needs instead of `*`",
        ROLE_RESOURCES,
        f"{NOT_BOOTSTRAP} && {OWN_RULES}.exists(r, {listed('r.?verbs')}.exists(v, v == '*'))",
    )
)
admission_form(
    FormSpec(
        "AH-RBAC-017",
        "list the resources and apiGroups the subject needs instead of `*`",
        ROLE_RESOURCES,
        f"{NOT_BOOTSTRAP} && {OWN_RULES}.exists(r, "
        + " || ".join(f"{listed(f'r.?{k}')}.exists(x, x == '*')" for k in ("resources", "apiGroups", "nonResourceURLs"))
        + ")",
    )
)

_ADMIN_ESCALATIONS: tuple[tuple[Pattern, bool], ...] = (
    (ESCALATE, True),
    (BIND, True),
    (NODES_PROXY, True),
    (WEBHOOK_WRITE, True),
    (SIGNER_APPROVE, True),
    (TOKEN_CREATE, True),
    ((("impersonate",), ("", "authentication.k8s.io"), ("users", "groups")), True),
)


def _escalating_cel(target: str) -> str:
    """CEL twin of rbac._escalating_for(target, rules) being non-empty, over variables.rules."""
    checks = [grants_cel("r", pattern, include_named=named) for pattern, named in _ADMIN_ESCALATIONS]
    checks.append(has_wildcard_cel("r"))
    if target in ("edit", "view"):
        checks.append(grants_cel("r", RBAC_WRITE, include_named=True))
    if target == "view":
        checks.append(grants_cel("r", SECRETS_READ, include_named=True))
        checks.append(
            f"(size({listed('r.?resources')}) > 0 && {listed('r.?verbs')}.exists(v, !(v in {cel_list(READ_VERBS)})))"
        )
    return "variables.rules.exists(r, " + " || ".join(checks) + ")"


admission_form(
    FormSpec(
        "AH-RBAC-018",
        "drop the aggregate-to-* label or the escalating rules (escalate, bind, impersonate, nodes/proxy, "
        "webhook writes, CSR approval, token creation, wildcards)",
        (MatchResource(RBAC_GROUP, "clusterroles", False),),
        f"{NOT_BOOTSTRAP} && ("
        + " || ".join(
            f"(object.metadata.?labels[?{cel('rbac.authorization.k8s.io/aggregate-to-' + t)}].orValue('') == 'true' "
            f"&& {_escalating_cel(t)})"
            for t in ("admin", "edit", "view")
        )
        + ")",
        (("rules", OWN_RULES),),
    )
)
admission_form(
    FormSpec(
        "AH-SA-003",
        "give the app its own ServiceAccount (an AccessPolicy does) or set automountServiceAccountToken: false",
        WORKLOAD_RESOURCES,
        "(variables.podSpec.?serviceAccountName.orValue('') != '' ? variables.podSpec.serviceAccountName : "
        "(variables.podSpec.?serviceAccount.orValue('') != '' ? variables.podSpec.serviceAccount : 'default')) "
        "== 'default' && variables.podSpec.?automountServiceAccountToken.orValue(false) == true",
        POD_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-SA-005",
        "use short-lived tokens (TokenRequest, projected volumes) instead of a service-account-token Secret",
        SECRET_RESOURCES,
        "object.?type.orValue('') == 'kubernetes.io/service-account-token'",
    )
)
admission_form(
    FormSpec(
        "AH-SA-006",
        "bind a dedicated ServiceAccount instead of default",
        BINDING_RESOURCES,
        f"{NOT_BOOTSTRAP} && variables.included.exists(s, s.kind == 'ServiceAccount' && s.name == 'default')",
        SUBJECT_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-POD-001",
        "remove securityContext.privileged: true (grant only the capabilities the container needs)",
        WORKLOAD_RESOURCES,
        "variables.containers.exists(c, c.?securityContext.?privileged.orValue(false) == true)",
        POD_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-POD-002",
        "remove hostNetwork, hostPID and hostIPC",
        WORKLOAD_RESOURCES,
        " || ".join(f"variables.podSpec.?{k}.orValue(false) == true" for k in ("hostNetwork", "hostPID", "hostIPC")),
        POD_VARIABLES,
    )
)
admission_form(
    FormSpec(
        "AH-POD-003",
        "set runAsNonRoot: true (or a non-zero runAsUser) and allowPrivilegeEscalation: false",
        WORKLOAD_RESOURCES,
        "variables.containers.exists(c, "
        "(c.?securityContext.?runAsUser.orValue(variables.podSpec.?securityContext.?runAsUser.orValue(-1)) == 0) || "
        "(c.?securityContext.?runAsUser.orValue(variables.podSpec.?securityContext.?runAsUser.orValue(-1)) == -1 && "
        "c.?securityContext.?runAsNonRoot.orValue("
        "variables.podSpec.?securityContext.?runAsNonRoot.orValue(false)) != true) || "
        "(c.?securityContext.?privileged.orValue(false) != true && "
        "c.?securityContext.?allowPrivilegeEscalation.orValue(true) != false))",
        POD_VARIABLES,
    )
)

# --- the role-capabilities profile --------------------------------------------------------------------
#
# The effective-permission rules (AH-RBAC-005..029) judge a binding joined with its role: a graph admission does
# not see. What admission does see is the role being written, and a role grants its rules to whoever it is bound
# to. Each form below flags a Role or ClusterRole that, bound (a Role by a RoleBinding in its namespace, a
# ClusterRole cluster-wide by a ClusterRoleBinding), makes the audit engine report that rule id for the binding:
# the same definitions (patterns of permissions.py, checks of rules/rbac.py and rules/rbac_more.py), including
# what they leave out: default (bootstrap) roles, roles that grant everything (AH-RBAC-001's; AH-RBAC-016/017
# flag them at admission), an aggregating ClusterRole (judged through the roles it aggregates, each written
# separately). The differential test binds each generated role to a subject and compares.

_IS_SUPERUSER = (
    "(" + " && ".join(f"{listed(f'r.?{k}')}.exists(x, x == '*')" for k in ("verbs", "apiGroups", "resources"))
    + " && size(" + listed("r.?resourceNames") + ") == 0)"
)  # fmt: skip


def _grants(pattern: Pattern, *, named: bool = False) -> str:
    """CEL twin of rules_grant(the role's own rules, pattern, include_named=named)."""
    return f"variables.rules.exists(r, {grants_cel('r', pattern, include_named=named)})"


def _privileged_default_roles() -> tuple[str, ...]:
    """Names AH-RBAC-007 treats as privileged to bind that admission can know: cluster-admin, admin, edit and
    every default ClusterRole that grants everything, escalate or bind, or impersonation (rbac._privileged_role_names
    over the shipped bootstrap roles; a custom privileged role is known to the audit engine only)."""
    names = {"cluster-admin", "admin", "edit"}
    for name, rules in resolve_cluster_roles(bootstrap_cluster_roles()).items():
        if _privileged(rules):
            names.add(name)
    return tuple(sorted(names))


def _privileged(rules: Sequence[PolicyRule]) -> bool:
    return (
        any(r.is_superuser for r in rules)
        or rules_grant(rules, ESCALATE)
        or rules_grant(rules, BIND)
        or rules_grant(rules, IMPERSONATE, include_named=True)
    )


ROLE_VARIABLES = (
    ("rules", OWN_RULES),
    ("clusterWide", "object.kind == 'ClusterRole'"),
    # AH-RBAC-008/025: cluster-wide or in a privileged namespace (ctx.privileged_namespaces: a parameter)
    (
        "privilegedScope",
        "variables.clusterWide || object.metadata.?namespace.orValue('') in variables.privilegedNamespaces",
    ),
    ("superuser", f"variables.rules.exists(r, {_IS_SUPERUSER})"),
    # AH-RBAC-007: the roles privileged to bind, as far as admission knows them (the role itself included)
    (
        "privilegedRoles",
        f"{cel_list(_privileged_default_roles())} + ((variables.superuser || {_grants(ESCALATE)} || {_grants(BIND)} || "
        f"{_grants(IMPERSONATE, named=True)}) ? [object.metadata.name] : [])",
    ),
    # AH-RBAC-029 (rbac_more.deletable_resources, _broad_delete): the own rules that delete without resourceNames,
    # and the kinds they delete: a resource name per resource (in whichever group) and `group/*` per group other
    # than `*` and core where they delete `*`. Each sorted, so distinct kinds are counted in one pass (distinct()
    # costs the square of the length); two variables, so each stays within the per-expression cost limit.
    (
        "deleters",
        f"variables.rules.filter(r, size({listed('r.?resourceNames')}) == 0 && "
        f"{listed('r.?verbs')}.exists(v, v in ['delete', 'deletecollection', '*']))",
    ),
    (
        "deletedNames",
        f"variables.deleters.filter(r, size({listed('r.?apiGroups')}) > 0)"
        f".map(r, {listed('r.?resources')}.filter(x, x != '*' && !x.contains('/'))).flatten().sort()",
    ),
    (
        "deletedGroups",
        f"variables.deleters.filter(r, {listed('r.?resources')}.exists(x, x == '*')).map(r, "
        f"{listed('r.?apiGroups')}.filter(g, !(g in {cel_list(sorted(ANY_RESOURCE_GROUPS))}))).flatten().sort()",
    ),
)


def _distinct_count(sorted_list: str) -> str:
    """CEL: how many distinct values a sorted list holds (one pass)."""
    return f"size(lists.range(size({sorted_list})).filter(i, i == 0 || {sorted_list}[i] != {sorted_list}[i - 1]))"


def _bind_privileged() -> str:
    """rbac._bind_check: bind on any role, or on named roles among the privileged ones."""
    names = f"{listed('r.?resourceNames')}.exists(n, n in variables.privilegedRoles)"
    named = f"{grants_cel('r', BIND, include_named=True)} && {names}"
    return f"({_grants(BIND)} || variables.rules.exists(r, {named}))"


_ROLE_CAPABILITY_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("AH-RBAC-005", "drop the impersonate verb", _grants(IMPERSONATE, named=True)),
    ("AH-RBAC-006", "drop escalate on roles and clusterroles", _grants(ESCALATE)),
    ("AH-RBAC-007", "drop bind, or name only roles that are not privileged in resourceNames", _bind_privileged()),
    (
        "AH-RBAC-008",
        "drop create on serviceaccounts/token (projected tokens need none), and secrets writes cluster-wide or in "
        "privileged namespaces",
        f"({_grants(TOKEN_CREATE, named=True)} || (variables.privilegedScope && {_grants(SECRETS_WRITE)}))",
    ),
    (
        "AH-RBAC-009",
        "name the Secrets the app reads (resourceNames) instead of reading all of them",
        _grants(SECRETS_READ),
    ),
    ("AH-RBAC-010", "drop nodes/proxy", f"(variables.clusterWide && {_grants(NODES_PROXY)})"),
    (
        "AH-RBAC-011",
        "drop writes on admission webhook configurations and admission policies",
        f"(variables.clusterWide && {_grants(WEBHOOK_WRITE)})",
    ),
    (
        "AH-RBAC-012",
        "drop approve on signers or update/patch on certificatesigningrequests/approval",
        f"(variables.clusterWide && {_grants(SIGNER_APPROVE, named=True)} && {_grants(CSR_APPROVE)})",
    ),
    ("AH-RBAC-013", "drop create on pods/exec and pods/attach", _grants(EXEC)),
    ("AH-RBAC-014", "drop update/patch on pods/ephemeralcontainers", _grants(EPHEMERAL_CONTAINERS)),
    (
        "AH-RBAC-015",
        "drop create on pods and create/update/patch on workload controllers, or keep the role for deployers",
        f"({_grants(CREATE_PODS)} || {_grants(CREATE_WORKLOADS)})",
    ),
    (
        "AH-RBAC-019",
        "drop writes on ConfigMaps (kube-system's configure the control plane's add-ons)",
        f"((variables.clusterWide || object.metadata.?namespace.orValue('') == 'kube-system') && "
        f"{_grants(CONFIGMAP_WRITE)})",
    ),
    ("AH-RBAC-020", "drop create on persistentvolumes", f"(variables.clusterWide && {_grants(PV_CREATE)})"),
    ("AH-RBAC-021", "drop delete/deletecollection on events", _grants(EVENTS_DELETE)),
    (
        "AH-RBAC-025",
        "drop writes and deletes on all Secrets, or name the Secrets (resourceNames)",
        f"({_grants(SECRETS_WRITE_DELETE)} && !(variables.privilegedScope && {_grants(SECRETS_WRITE)}))",
    ),
    (
        "AH-RBAC-026",
        "drop writes on NetworkPolicies, Services, Endpoints, EndpointSlices and Ingresses, or keep the role for "
        "deployers",
        "(" + " || ".join(_grants(pattern) for _, pattern in TRAFFIC_KINDS) + ")",
    ),
    ("AH-RBAC-027", "drop create on pods/portforward", _grants(PORT_FORWARD)),
    (
        "AH-RBAC-028",
        "drop update/patch on rolebindings and clusterrolebindings",
        f"(variables.clusterWide ? {_grants(REBIND)} : {_grants(NAMESPACED_REBIND)})",
    ),
    (
        "AH-RBAC-029",
        f"list the kinds the subject must delete (fewer than {BROAD_DELETE_RESOURCES}) or name the objects",
        f"(variables.deleters.exists(r, {listed('r.?resources')}.exists(x, x == '*') && "
        f"{listed('r.?apiGroups')}.exists(g, g in {cel_list(sorted(ANY_RESOURCE_GROUPS))})) || "
        f"{_distinct_count('variables.deletedNames')} + {_distinct_count('variables.deletedGroups')} >= "
        f"{BROAD_DELETE_RESOURCES})",
    ),
)
for _rule_id, _fix, _check in _ROLE_CAPABILITY_CHECKS:
    admission_form(
        FormSpec(
            _rule_id,
            _fix,
            ROLE_RESOURCES,
            f"{NOT_BOOTSTRAP} && !variables.superuser && {_check}",
            ROLE_VARIABLES,
            profile=ROLE_CAPABILITIES_PROFILE,
        )
    )

# Rules that stay audit-only, and why (docs/admission.md renders this table).
AUDIT_ONLY: dict[str, str] = {
    "AH-RBAC-022": "needs the set of existing roles (and a role created later fixes it)",
    "AH-RBAC-023": "needs audit-log usage over a window of days: a grant is unused only in hindsight",
    "AH-RBAC-024": "latent means bound by nothing: needs every binding (a binding created later changes it)",
    "AH-SA-009": "needs the Secrets the ServiceAccount names (their type)",
    "AH-SA-010": "needs the set of existing ServiceAccounts (one created later fixes it)",
    "AH-SA-011": "an attack path joins the workload, its ServiceAccount's bindings and their roles",
    "AH-SA-001": "the default ServiceAccount is created by kube-controller-manager; the operator's namespace "
    "hygiene sets automount off instead of blocking namespace creation",
    "AH-SA-002": "needs the ServiceAccount's bindings",
    "AH-SA-004": "needs every workload using the ServiceAccount",
    "AH-SA-007": "needs the ServiceAccount's bindings",
    "AH-SA-008": "needs the AccessPolicy that owns the ServiceAccount",
    "AH-NET-001": "a property of the namespace (its NetworkPolicies), not of one object",
    "AH-NET-002": "a property of the namespace (its NetworkPolicies), not of one object",
    "AH-NET-003": "needs the NetworkPolicies selecting the pods",
    "AH-NET-004": "needs the NetworkPolicies selecting the pods",
    "AH-NET-005": "needs the NetworkPolicies selecting the pods",
    "AH-GOV-001": "needs the AccessPolicies and the workloads",
    "AH-GOV-002": "exemption bookkeeping over time (at admission an expired exemption simply does not exempt)",
    "AH-GOV-003": "exemption bookkeeping (a malformed exemption simply does not exempt at admission)",
    "AH-GOV-004": "needs the AccessPolicies and the workloads",
}
del _rule_id, _fix, _check
# Appended to the title in the message of a role-capabilities form (the catalogue title speaks of the subject).
ROLE_LEVEL = "granted by this role to whoever it is bound to"


def parameter_variables(now: datetime, owner_exemptions: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The operator's parameters as CEL variables: its clock (CEL has none) and owner exemptions."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = ", ".join(f"{cel(k)}: {cel(v)}" for k, v in sorted(owner_exemptions.items()))
    return (("now", f"timestamp({cel(stamp)})"), ("ownerExemptions", "{" + entries + "}"))


def compiled_forms(
    titles: Callable[[str], tuple[str, str]],
    excluded_subject_prefixes: Sequence[str],
    now: datetime,
    owner_exemptions: Mapping[str, str],
    *,
    privileged_namespaces: Sequence[str] = ("kube-system",),
    role_capabilities: RoleCapabilities = "off",
    operator_username: str = "",
) -> list[AdmissionForm]:
    """The admission forms of every compiled rule. titles(rule_id) -> (severity, title) comes from the
    rule registry (so the message names the catalogue's title); excluded prefixes and privileged namespaces from
    the AuditContext; now and owner_exemptions are the operator's parameters (parameter_variables).

    role_capabilities selects the opt-in profile of role-level forms: "off" leaves them out, "warn" makes them
    warn in every namespace, "deny" binds them like the core forms (Deny in enforce namespaces). The operator's
    own requests (operator_username, when known) are not judged by the forms on roles: the Roles it writes are
    what an AccessPolicy grants, which the AccessPolicy guards checked when the policy was admitted."""
    prefixes = ("excludedPrefixes", cel_list(excluded_subject_prefixes))
    privileged = ("privilegedNamespaces", cel_list(sorted(privileged_namespaces)))
    not_operator = (("not-the-operator", f"request.userInfo.username != {cel(operator_username)}"),)
    forms = []
    for rule_id, spec in sorted(FORMS.items()):
        profiled = spec.profile == ROLE_CAPABILITIES_PROFILE
        if profiled and role_capabilities == "off":
            continue
        severity, title = titles(rule_id)
        on_roles = all(r.resource in ("roles", "clusterroles") for r in spec.resources)
        forms.append(
            AdmissionForm(
                rule_id=rule_id,
                severity=severity,
                title=f"{title} ({ROLE_LEVEL})" if profiled else title,
                fix=spec.fix,
                resources=spec.resources,
                violation=spec.violation,
                exempt=exemption_cel(rule_id),
                variables=(
                    prefixes,
                    *((privileged,) if profiled else ()),
                    *parameter_variables(now, owner_exemptions),
                    *EXEMPTION_VARIABLES,
                    *spec.variables,
                ),
                match_conditions=(*spec.match_conditions, *(not_operator if on_roles and operator_username else ())),
                enforce_actions=("Warn", "Audit") if profiled and role_capabilities == "warn" else ("Deny",),
                profile=spec.profile,
            )
        )
    return forms


# --- AccessPolicy guards ----------------------------------------------------------------------------

_RULES = "object.spec.?rbac.?rules.orValue([])"
_CLUSTER_RULES = "object.spec.?rbac.?clusterRules.orValue([])"
_COUNT = "size(r.verbs) * size(r.?apiGroups.orValue([''])) * size(r.resources) * " + (
    "(size(r.?resourceNames.orValue([])) == 0 ? 1 : size(r.resourceNames))"
)


def _expansion(rules: str, namespace: str) -> str:
    return (
        f"{rules}.map(r, r.verbs.map(v, r.?apiGroups.orValue(['']).map(g, r.resources.map(x, "
        f"(size(r.?resourceNames.orValue([])) == 0 ? [''] : r.resourceNames).map(n, "
        f"{{'v': string(v), 'g': string(g), 'r': string(x).split('/')[0], "
        f"'s': size(string(x).split('/')) > 1 ? string(x).split('/')[1] : '', "
        f"'n': string(n), 'ns': string({namespace})}}))))).flatten().flatten().flatten().flatten()"
    )


def _authorized(item: str) -> str:
    base = f"authorizer.group({item}.g).resource({item}.r).subresource({item}.s).namespace({item}.ns)"
    return f"({item}.n == '' ? {base}.check({item}.v).allowed() : {base}.name({item}.n).check({item}.v).allowed())"


def _describe(item: str) -> str:
    return (
        f"{item}.v + ' ' + {item}.r + ({item}.s != '' ? '/' + {item}.s : '') + "
        f"({item}.g != '' ? '.' + {item}.g : '') + ({item}.n != '' ? ' ' + {item}.n : '') + "
        f"({item}.ns != '' ? ' in namespace ' + {item}.ns : ' cluster-wide')"
    )


def requester_guard(limit: int = AUTHORIZER_LIMIT) -> GuardPolicy:
    """The requester must hold every permission an AccessPolicy grants (CEL `authorizer`).

    Requesters allowed to `escalate` Roles in the namespace (and ClusterRoles, when the policy has cluster
    rules) could write any such role themselves and skip the per-grant checks (cluster admins, for one).
    Everyone else gets one authorizer check per (verb, apiGroup, resource, name); a check costs 350,000 of
    the 10,000,000 runtime budget, so a policy may carry at most AUTHORIZER_LIMIT such combinations, one
    per validation."""
    validations: list[dict[str, str]] = [
        {
            "expression": f"variables.count <= {limit}",
            "messageExpression": "'AccessPolicy grants ' + string(variables.count) + ' permission combinations; "
            f"admission verifies at most {limit} for requesters without escalate on Roles: "
            "split the policy or have a cluster admin apply it'",
            "reason": "Forbidden",
        }
    ]
    for index in range(limit):
        item = f"variables.grants[{index}]"
        validations.append(
            {
                "expression": f"size(variables.grants) <= {index} || {_authorized(item)}",
                "messageExpression": "'AccessPolicy grants a permission the requester does not hold: ' + "
                f"{_describe(item)} + '. Ask someone who holds it to apply the policy.'",
                "reason": "Forbidden",
            }
        )
    namespace = "object.metadata.namespace"
    return GuardPolicy(
        name="accesspolicy-requester",
        resources=ACCESS_POLICY_RESOURCES,
        operations=("CREATE", "UPDATE"),
        match_conditions=(
            (
                "rbac-changed",
                "request.operation == 'CREATE' || !has(oldObject.spec.rbac) || !has(object.spec.rbac) || "
                "object.spec.rbac != oldObject.spec.rbac",
            ),
            (
                "requester-cannot-escalate",
                f"!(authorizer.group({cel(RBAC_GROUP)}).resource('roles').namespace({namespace})"
                f".check('escalate').allowed() && (size({_CLUSTER_RULES}) == 0 || "
                f"authorizer.group({cel(RBAC_GROUP)}).resource('clusterroles').check('escalate').allowed()))",
            ),
        ),
        variables=(
            ("count", f"{_RULES}.map(r, {_COUNT}).sum() + {_CLUSTER_RULES}.map(r, {_COUNT}).sum()"),
            (
                "grants",
                f"variables.count > {limit} ? [] : "
                f"{_expansion(_RULES, namespace)} + {_expansion(_CLUSTER_RULES, cel(''))}",
            ),
        ),
        validations=tuple(validations),
    )


def _sensitive_cel(rule: str, allowed: frozenset[str]) -> list[tuple[str, str]]:
    """(capability, CEL true when the rule grants it), twins of ceiling.sensitive_capabilities."""
    groups, resources, verbs = f"{rule}.?apiGroups.orValue([''])", f"{rule}.resources", f"{rule}.verbs"
    core = f"{groups}.exists(g, g in ['', '*'])"

    def has(resource: str) -> str:
        return f"{resources}.exists(x, x == {cel(resource)} || x == '*')"

    writes = f"{verbs}.exists(v, v in {cel_list(sorted(CEILING_WRITE_VERBS | {'*'}))})"
    reads = f"{verbs}.exists(v, v in {cel_list(sorted(CEILING_READ_VERBS | {'*'}))})"
    webhook = sorted(WEBHOOK_WRITE[2])
    checks = [
        (
            "wildcard",
            f"({groups}.exists(g, g == '*') || {resources}.exists(x, x == '*') || {verbs}.exists(v, v == '*'))",
        ),
        ("escalate", f"{verbs}.exists(v, v == 'escalate')"),
        ("bind", f"{verbs}.exists(v, v == 'bind')"),
        ("impersonate", f"{verbs}.exists(v, v == 'impersonate')"),
        ("secrets-read", f"({core} && {has('secrets')} && {reads})"),
        ("nodes-proxy", f"({core} && {has('nodes/proxy')})"),
        ("token-create", f"({core} && {has('serviceaccounts/token')} && {verbs}.exists(v, v in ['create', '*']))"),
        (
            "exec",
            f"({core} && ({has('pods/exec')} || {has('pods/attach')}) && "
            f"{verbs}.exists(v, v in ['create', 'get', '*']))",
        ),
        (
            "webhook-write",
            f"({groups}.exists(g, g in ['admissionregistration.k8s.io', '*']) && {writes} && "
            f"{resources}.exists(x, x in {cel_list([*webhook, '*'])}))",
        ),
        (
            "rbac-write",
            f"({groups}.exists(g, g in [{cel(RBAC_GROUP)}, '*']) && {writes} && "
            f"{resources}.exists(x, x in ['roles', 'rolebindings', 'clusterroles', 'clusterrolebindings', '*']))",
        ),
        (
            "csr-approve",
            f"({groups}.exists(g, g in ['certificates.k8s.io', '*']) && "
            f"(({has('certificatesigningrequests/approval')} && {writes}) || "
            f"({has('signers')} && {verbs}.exists(v, v in ['approve', '*']))))",
        ),
    ]
    return [(name, check) for name, check in checks if name not in allowed]


def _ceiling_covers(values: str, value: str) -> str:
    """CEL twin of ceiling._covers: `*`, the value, or `*/<subresource>`."""
    return (
        f"({values}.exists(c, c == '*' || c == {value}) || "
        f"({value}.contains('/') && {values}.exists(c, c == '*/' + {value}.split('/')[1])))"
    )


def ceiling_guard(
    allowed_sensitive: frozenset[str],
    allow_cluster_rules: bool,
    ceiling_role: str,
    ceiling_rules: Sequence[Mapping[str, Any]],
) -> GuardPolicy:
    """Rules outside the grant ceiling are rejected at admission (the operator would refuse them later with
    Ready=False): cluster rules when not allowed, sensitive capabilities not allowed, and any
    (group, resource, verb, name) no rule of the ceiling ClusterRole covers. The ceiling's rules are rendered
    into the policy (variables.ceiling); the operator re-applies it when the ClusterRole changes."""
    validations: list[dict[str, str]] = []
    if not allow_cluster_rules:
        validations.append(
            {
                "expression": f"size({_CLUSTER_RULES}) == 0",
                "message": "rbac.clusterRules: cluster-wide rules are not allowed by the operator "
                "(allowClusterRules is off)",
                "reason": "Forbidden",
            }
        )
    all_rules = f"({_RULES} + ({'[]' if not allow_cluster_rules else _CLUSTER_RULES}))"
    for capability, check in _sensitive_cel("r", allowed_sensitive):
        validations.append(
            {
                "expression": f"!{all_rules}.exists(r, {check})",
                "message": f"refused at admission: a rule grants the sensitive capability {capability}, which the "
                "operator does not allow (grant ceiling)",
                "reason": "Forbidden",
            }
        )
    covered = (
        "variables.ceiling.exists(c, "
        f"{_ceiling_covers('c.apiGroups', 'i.g')} && {_ceiling_covers('c.resources', 'i.r')} && "
        f"{_ceiling_covers('c.verbs', 'i.v')} && "
        "(size(c.resourceNames) == 0 || (i.n != '' && i.n in c.resourceNames)))"
    )
    items = (
        f"{all_rules}.map(r, r.?apiGroups.orValue(['']).map(g, r.resources.map(x, r.verbs.map(v, "
        "(size(r.?resourceNames.orValue([])) == 0 ? [''] : r.resourceNames).map(n, "
        "{'g': string(g), 'r': string(x), 'v': string(v), 'n': string(n)}))))).flatten().flatten().flatten().flatten()"
    )
    validations.append(
        {
            "expression": f"variables.count > {CEILING_COMBINATION_LIMIT} || variables.items.all(i, {covered})",
            "messageExpression": f"'outside the grant ceiling (ClusterRole {ceiling_role}): ' + "
            f"variables.items.filter(i, !({covered})).map(i, i.v + ' ' + i.r + "
            "' (apiGroup \"' + i.g + '\"' + (i.n != '' ? ', name ' + i.n : '') + ')').join(', ')",
            "reason": "Forbidden",
        }
    )
    count = f"{all_rules}.map(r, {_COUNT}).sum()"
    return GuardPolicy(
        name="accesspolicy-ceiling",
        resources=ACCESS_POLICY_RESOURCES,
        operations=("CREATE", "UPDATE"),
        variables=(
            ("ceiling", _ceiling_literal(ceiling_rules)),
            ("count", count),
            ("items", f"variables.count > {CEILING_COMBINATION_LIMIT} ? [] : {items}"),
        ),
        validations=tuple(validations),
    )


def _ceiling_literal(rules: Sequence[Mapping[str, Any]]) -> str:
    """The ceiling ClusterRole's resource rules as a CEL list literal, every key present."""
    keys = ("apiGroups", "resources", "verbs", "resourceNames")
    normalised = [
        {key: [str(v) for v in rule.get(key) or []] for key in keys}
        for rule in rules
        if isinstance(rule, Mapping) and not rule.get("nonResourceURLs")
    ]
    return json.dumps(normalised)


# --- the automount mutation ---------------------------------------------------------------------------

_TOKEN_VOLUME = "kube-api-access-"


def automount_mutation() -> MutationForm:
    """Pods running as `default` (or naming no ServiceAccount) that leave automountServiceAccountToken unset
    get it set to false, and the token volume the ServiceAccount admission plugin (which runs before
    admission policies) already injected is taken out again, so the pod really has no token."""
    volume = f"v.name.startsWith({cel(_TOKEN_VOLUME)})"
    patches = [
        "[JSONPatch{op: 'add', path: '/spec/automountServiceAccountToken', value: false}]",
        f"(object.spec.?volumes.orValue([]).exists(v, {volume}) ? [JSONPatch{{op: 'replace', path: '/spec/volumes', "
        f"value: object.spec.volumes.filter(v, !{volume})}}] : [])",
    ]
    for key in ("initContainers", "containers"):
        containers = f"object.spec.?{key}.orValue([])"
        patches.append(
            f"lists.range(size({containers})).filter(i, {containers}[i].?volumeMounts.orValue([])"
            f".exists(v, {volume})).map(i, JSONPatch{{op: 'replace', path: '/spec/{key}/' + string(i) + "
            f"'/volumeMounts', value: {containers}[i].volumeMounts.filter(v, !{volume})}})"
        )
    return MutationForm(
        name="default-sa-automount",
        resources=(MatchResource("", "pods", True),),
        match_conditions=(
            ("default-service-account", "object.spec.?serviceAccountName.orValue('default') in ['', 'default']"),
            ("automount-unset", "!has(object.spec.automountServiceAccountToken)"),
        ),
        json_patch=" + ".join(patches),
    )


def guard_policies(
    allowed_sensitive: frozenset[str],
    allow_cluster_rules: bool,
    ceiling_role: str,
    ceiling_rules: Sequence[Mapping[str, Any]],
) -> list[GuardPolicy]:
    return [requester_guard(), ceiling_guard(allowed_sensitive, allow_cluster_rules, ceiling_role, ceiling_rules)]


def admission_table(catalogue: Mapping[str, Rule]) -> str:
    """The markdown table in docs/admission.md: every catalogue rule, its admission form or why it has none."""
    lines = ["| Rule | Title | Admission | Matches / why not |", "| --- | --- | --- | --- |"]
    for rule_id, rule in sorted(catalogue.items()):
        spec = FORMS.get(rule_id)
        if spec is not None and spec.profile:
            kinds = ", ".join(sorted({r.resource for r in spec.resources}))
            lines.append(f"| {rule_id} | {rule.title} | profile `{spec.profile}` | {kinds} (the role, as if bound) |")
        elif spec is not None:
            kinds = ", ".join(sorted({r.resource for r in spec.resources}))
            lines.append(f"| {rule_id} | {rule.title} | yes | {kinds} |")
        else:
            why = AUDIT_ONLY.get(rule_id, "not classified yet (audit only)")
            lines.append(f"| {rule_id} | {rule.title} | audit only | {why} |")
    return "\n".join(lines) + "\n"
