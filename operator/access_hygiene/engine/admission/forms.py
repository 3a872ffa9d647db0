"""Admission forms of the catalogue rules: for every rule whose verdict depends on the incoming object
alone, its CEL, built here from the same constants the Python checks use (capability patterns from
capabilities.py, exemption annotations and formats from exemptions.py, through cel.py). One registration per
rule id; render/admission.py turns them into ValidatingAdmissionPolicies.

The differential test (tests/cluster/test_admission.py) holds each form to the audit engine:
`run_audit(ClusterSnapshot.from_objects([obj, *context]), ctx, only=[rule_id])` and a server-side
dry-run of the same object must agree.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from access_hygiene.engine.admission.cel import (
    EXEMPTION_VARIABLES,
    NOT_BOOTSTRAP,
    NOW_CEL,
    OWN_RULES,
    POD_VARIABLES,
    RBAC_GROUP,
    SUBJECT_VARIABLES,
    cel,
    cel_list,
    exemption_cel,
    grants_cel,
    has_wildcard_cel,
    listed,
)
from access_hygiene.engine.catalogue.rbac_tampering import (
    ANY_RESOURCE_GROUPS,
    BROAD_DELETE_RESOURCES,
    NAMESPACED_REBIND,
    PORT_FORWARD,
    REBIND,
    TRAFFIC_KINDS,
)
from access_hygiene.engine.catalogue.registry import Rule
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles
from access_hygiene.engine.rbac.capabilities import (
    BIND,
    CONFIGMAP_WRITE,
    CREATE_PODS,
    CREATE_WORKLOADS,
    CSR_APPROVE,
    EPHEMERAL_CONTAINERS,
    ESCALATE,
    EVENTS_DELETE,
    EXEC,
    IMPERSONATE,
    NODES_PROXY,
    PV_CREATE,
    RBAC_WRITE,
    SECRETS_READ,
    SECRETS_WRITE,
    SECRETS_WRITE_DELETE,
    SIGNER_APPROVE,
    TOKEN_CREATE,
    WEBHOOK_WRITE,
    Pattern,
    rules_grant,
)
from access_hygiene.engine.rbac.permissions import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    MASTERS_GROUP,
    READ_VERBS,
    UNAUTHENTICATED_GROUP,
    PolicyRule,
    resolve_cluster_roles,
)
from access_hygiene.render.admission import AdmissionForm, MatchResource

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
# the same definitions (patterns of engine/rbac/permissions.py, checks of engine/catalogue/rbac.py and
# engine/catalogue/rbac_tampering.py), including what they leave out: default (bootstrap) roles, roles that grant
# everything (AH-RBAC-001's; AH-RBAC-016/017 flag them at admission), an aggregating ClusterRole (judged through the
# roles it aggregates, each written separately). The differential test binds each generated role to a subject and
# compares.

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


# The operator's parameters, read from the parameter object kube-apiserver hands each request (`params`, a
# custom resource: render/admission_parameters.py): the floor of "now" (NOW_CEL), "now" itself, and the owner
# exemptions with their untils. No clock: the object changes only when an event or a passed expiry changes them.
PARAMETER_VARIABLES = (
    ("floor", "params.spec.floor"),
    ("now", NOW_CEL),
    ("ownerExemptions", "params.spec.?ownerExemptions.orValue({})"),
)


def compiled_forms(
    titles: Callable[[str], tuple[str, str]],
    excluded_subject_prefixes: Sequence[str],
    *,
    privileged_namespaces: Sequence[str] = ("kube-system",),
    role_capabilities: RoleCapabilities = "off",
    operator_username: str = "",
) -> list[AdmissionForm]:
    """The admission forms of every compiled rule. titles(rule_id) -> (severity, title) comes from the
    rule registry (so the message names the catalogue's title); excluded prefixes and privileged namespaces from
    the AuditContext; the operator's changing parameters come from the parameter object (PARAMETER_VARIABLES).

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
                    *PARAMETER_VARIABLES,
                    *EXEMPTION_VARIABLES,
                    *spec.variables,
                ),
                match_conditions=(*spec.match_conditions, *(not_operator if on_roles and operator_username else ())),
                enforce_actions=("Warn", "Audit") if profiled and role_capabilities == "warn" else ("Deny",),
                profile=spec.profile,
                uses_parameters=True,
            )
        )
    return forms


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
