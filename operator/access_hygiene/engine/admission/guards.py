"""AccessPolicy admission guards (the requester must hold what a policy grants, checked with
CEL's `authorizer`; rules outside the grant ceiling are refused) and the automount mutation."""

from collections.abc import Mapping, Sequence
from typing import Any

from access_hygiene.engine.admission.cel import RBAC_GROUP, cel, cel_list
from access_hygiene.engine.rbac.capabilities import WEBHOOK_WRITE
from access_hygiene.engine.rbac.grant_ceiling import READ_VERBS as CEILING_READ_VERBS
from access_hygiene.engine.rbac.grant_ceiling import WRITE_VERBS as CEILING_WRITE_VERBS
from access_hygiene.render.admission import GuardPolicy, MatchResource, MutationForm

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
) -> GuardPolicy:
    """Rules outside the grant ceiling are rejected at admission (the operator would refuse them later with
    Ready=False): cluster rules when not allowed, sensitive capabilities not allowed, and any
    (group, resource, verb, name) no rule of the ceiling ClusterRole covers. The ceiling's rules come from the
    parameter object (ceiling_parameter), which the operator rewrites when the ClusterRole changes."""
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
            ("ceiling", "params.spec.?ceiling.orValue([])"),
            ("count", count),
            ("items", f"variables.count > {CEILING_COMBINATION_LIMIT} ? [] : {items}"),
        ),
        validations=tuple(validations),
        uses_parameters=True,
    )


def ceiling_parameter(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, list[str]]]:
    """The ceiling ClusterRole's resource rules as the parameter object holds them, every key present."""
    keys = ("apiGroups", "resources", "verbs", "resourceNames")
    return [
        {key: [str(v) for v in rule.get(key) or []] for key in keys}
        for rule in rules
        if isinstance(rule, Mapping) and not rule.get("nonResourceURLs")
    ]


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
) -> list[GuardPolicy]:
    return [requester_guard(), ceiling_guard(allowed_sensitive, allow_cluster_rules, ceiling_role)]
