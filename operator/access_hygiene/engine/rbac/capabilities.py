"""Capabilities: coarse, named permission patterns (secrets-read, escalate, bind,
impersonate, nodes/proxy, ...) shared by the rules, the metrics and admission, answered per RuleSet from bit masks;
what a binding confers and what each ServiceAccount effectively holds."""

from collections.abc import Collection, Iterable

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot, name_of, namespace_of
from access_hygiene.engine.rbac.permissions import (
    READ_VERBS,
    SA_USER_PREFIX,
    Binding,
    PolicyRule,
    RuleSet,
    permission_index,
    service_account_keys,
)
from access_hygiene.models.findings import SubjectCapability

Pattern = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # (verbs, apiGroups, resources)

SECRETS_READ: Pattern = (READ_VERBS, ("",), ("secrets",))
SECRETS_WRITE: Pattern = (("create", "update", "patch"), ("",), ("secrets",))
SECRETS_WRITE_DELETE: Pattern = (("create", "update", "patch", "delete", "deletecollection"), ("",), ("secrets",))
EXEC: Pattern = (("create",), ("",), ("pods/exec", "pods/attach"))
EPHEMERAL_CONTAINERS: Pattern = (("update", "patch"), ("",), ("pods/ephemeralcontainers",))
ESCALATE: Pattern = (("escalate",), ("rbac.authorization.k8s.io",), ("roles", "clusterroles"))
BIND: Pattern = (("bind",), ("rbac.authorization.k8s.io",), ("roles", "clusterroles"))
IMPERSONATE: Pattern = (
    ("impersonate",),
    ("", "authentication.k8s.io"),
    ("users", "groups", "serviceaccounts", "uids", "userextras/scopes", "userextras"),
)
NODES_PROXY: Pattern = (("get", "create"), ("",), ("nodes/proxy",))
CREATE_PODS: Pattern = (("create",), ("",), ("pods",))
# Pod-template control: creating or changing a workload controller runs any image as any ServiceAccount of the
# namespace, which is as good as creating pods.
CREATE_WORKLOADS: Pattern = (
    ("create", "update", "patch"),
    ("", "apps", "batch"),
    ("replicationcontrollers", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "cronjobs"),
)
TOKEN_CREATE: Pattern = (("create",), ("",), ("serviceaccounts/token",))
WEBHOOK_WRITE: Pattern = (
    ("create", "update", "patch", "delete"),
    ("admissionregistration.k8s.io",),
    (
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "mutatingadmissionpolicies",
        "mutatingadmissionpolicybindings",
    ),
)
CSR_APPROVE: Pattern = (("update", "patch"), ("certificates.k8s.io",), ("certificatesigningrequests/approval",))
SIGNER_APPROVE: Pattern = (("approve",), ("certificates.k8s.io",), ("signers",))
CONFIGMAP_WRITE: Pattern = (("create", "update", "patch", "delete", "deletecollection"), ("",), ("configmaps",))
PV_CREATE: Pattern = (("create",), ("",), ("persistentvolumes",))
EVENTS_DELETE: Pattern = (("delete", "deletecollection"), ("", "events.k8s.io"), ("events",))
RBAC_WRITE: Pattern = (
    ("create", "update", "patch"),
    ("rbac.authorization.k8s.io",),
    ("roles", "rolebindings"),
)


def rule_grants(rule: PolicyRule, pattern: Pattern, *, include_named: bool = False) -> bool:
    """Does the rule grant any (verb, group, resource) of the pattern? resourceNames-restricted rules
    count only with include_named (a named grant is the least-privilege form of most of these).

    Same answer as trying allows_any_name() on every (verb, group, resource) of the pattern: verb, group
    and resource match independently, so each is checked once (set operations first, they reject most)."""
    if rule.resource_names and not include_named:
        return False
    verbs, groups, resources = pattern
    # allows_any_name's verb, group and resource tests are independent, so some (verb, group, resource)
    # of the pattern matches exactly when some verb, some group and some resource of it match.
    if "*" not in rule.verbs and rule.verbs.isdisjoint(verbs):
        return False
    if "*" not in rule.api_groups and rule.api_groups.isdisjoint(groups):
        return False
    if "*" in rule.resources:
        return True
    for resource_text in resources:
        _, slash, subresource = resource_text.partition("/")
        if resource_text in rule.resources or (slash and f"*/{subresource}" in rule.resources):
            return True
    return False


class _PatternBits:
    """One bit per registered pattern, and per verb, API group and resource the patterns name the bits of
    the patterns naming it. A rule's mask (the patterns it grants) is then the AND of its verbs', groups'
    and resources' masks: rule_grants' three independent tests, for every registered pattern at once."""

    def __init__(self) -> None:
        self.bits: dict[int, tuple[Pattern, int]] = {}  # id(pattern) -> (pattern, bit); patterns kept alive
        self.all = 0
        self.verbs: dict[str, int] = {}
        self.groups: dict[str, int] = {}
        self.resources: dict[str, int] = {}  # exact resource text
        self.subresources: dict[str, int] = {}  # "*/<subresource>" -> patterns naming some "x/<subresource>"

    def register(self, pattern: Pattern) -> None:
        entry = self.bits.get(id(pattern))
        if entry is not None and entry[0] is pattern:
            return
        bit = 1 << len(self.bits)
        self.bits[id(pattern)] = (pattern, bit)
        self.all |= bit
        verbs, groups, resources = pattern
        for table, values in ((self.verbs, verbs), (self.groups, groups), (self.resources, resources)):
            for value in values:
                table[value] = table.get(value, 0) | bit
        for resource in resources:
            _, slash, subresource = resource.partition("/")
            if slash:
                key = f"*/{subresource}"
                self.subresources[key] = self.subresources.get(key, 0) | bit

    def rule_mask(self, rule: PolicyRule) -> int:
        """The registered patterns the rule grants, resourceNames ignored (rule_grants with include_named)."""
        everything = self.all
        if "*" in rule.verbs:
            mask = everything
        else:
            verbs = self.verbs
            mask = 0
            for verb in rule.verbs:
                mask |= verbs.get(verb, 0)
        if not mask:
            return 0
        if "*" not in rule.api_groups:
            groups = self.groups
            group_mask = 0
            for group in rule.api_groups:
                group_mask |= groups.get(group, 0)
            mask &= group_mask
        if not mask or "*" in rule.resources:
            return mask
        resources, subresources = self.resources, self.subresources
        resource_mask = 0
        for resource in rule.resources:
            resource_mask |= resources.get(resource, 0)
            if resource.startswith("*/"):
                resource_mask |= subresources.get(resource, 0)
        return mask & resource_mask

    def rule_set_masks(self, rules: RuleSet) -> tuple[int, int, int]:
        named = unnamed = 0
        for rule in rules:
            mask = self.rule_mask(rule)
            named |= mask
            if not rule.resource_names:
                unnamed |= mask
        return len(self.bits), named, unnamed


_PATTERNS = _PatternBits()


def register_pattern(pattern: Pattern) -> Pattern:
    """Make rules_grant() answer for this pattern from the RuleSet's bit masks (for patterns that live as
    long as the process: module constants). Returns the pattern."""
    _PATTERNS.register(pattern)
    return pattern


def pattern_bit(pattern: Pattern) -> int:
    """The bit of a registered pattern in pattern_masks() (KeyError for a pattern never registered)."""
    entry = _PATTERNS.bits.get(id(pattern))
    if entry is None or entry[0] is not pattern:
        raise KeyError(f"pattern not registered: {pattern}")
    return entry[1]


def pattern_masks(rules: RuleSet) -> tuple[int, int]:
    """The registered patterns the rules grant, as bits (pattern_bit): (counting resourceNames-restricted
    rules, not counting them), i.e. rules_grant(rules, p, include_named=True/False) for every p at once."""
    masks = rules.masks
    if masks is None or masks[0] != len(_PATTERNS.bits):
        masks = rules.masks = _PATTERNS.rule_set_masks(rules)
    return masks[1], masks[2]


def rules_grant(rules: Iterable[PolicyRule], pattern: Pattern, *, include_named: bool = False) -> bool:
    """Does any of the rules grant any (verb, group, resource) of the pattern? Remembered per RuleSet."""
    if isinstance(rules, RuleSet):
        entry = _PATTERNS.bits.get(id(pattern))
        if entry is not None and entry[0] is pattern:
            masks = rules.masks
            if masks is None or masks[0] != len(_PATTERNS.bits):
                masks = rules.masks = _PATTERNS.rule_set_masks(rules)
            return bool(masks[1 if include_named else 2] & entry[1])
        key = (id(pattern), include_named)
        cached = rules.memo.get(key)
        if cached is not None and cached[0] is pattern:
            return cached[1]
        result = any(rule_grants(rule, pattern, include_named=include_named) for rule in rules)
        rules.memo[key] = (pattern, result)  # the pattern is kept alive, so its id stays unique
        return result
    return any(rule_grants(rule, pattern, include_named=include_named) for rule in rules)


for _pattern in (SECRETS_READ, SECRETS_WRITE, SECRETS_WRITE_DELETE, EXEC, EPHEMERAL_CONTAINERS, ESCALATE, BIND,
                 IMPERSONATE, NODES_PROXY, CREATE_PODS, CREATE_WORKLOADS, TOKEN_CREATE, WEBHOOK_WRITE, CSR_APPROVE,
                 SIGNER_APPROVE, CONFIGMAP_WRITE, PV_CREATE, EVENTS_DELETE, RBAC_WRITE):  # fmt: skip
    register_pattern(_pattern)


# The API group of the pattern resources that exist in only some of their pattern's groups (a pattern crosses its
# verbs, groups and resources): what a message names is only what the rule's groups really serve.
RESOURCE_GROUPS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("users", "groups", "serviceaccounts", "replicationcontrollers"), frozenset({""})),
    **dict.fromkeys(("uids", "userextras", "userextras/scopes"), frozenset({"authentication.k8s.io"})),
    **dict.fromkeys(("deployments", "replicasets", "statefulsets", "daemonsets"), frozenset({"apps"})),
    **dict.fromkeys(("jobs", "cronjobs"), frozenset({"batch"})),
}


def granted_pairs(
    rules: Iterable[PolicyRule], pattern: Pattern, *, include_named: bool = False
) -> tuple[list[tuple[str, str]], frozenset[str]]:
    """What of the pattern the rules really grant: its (verb, resource) pairs, in the pattern's order, and the
    resourceNames they are limited to (empty when one granting rule is not limited). A message built from these
    names only verbs and resources that are granted (not every verb of the pattern)."""
    verbs, groups, resources = pattern
    found: set[tuple[str, str]] = set()
    names: set[str] = set()
    unlimited = False
    for rule in rules:
        if not rule_grants(rule, pattern, include_named=include_named):
            continue
        rule_groups = set(groups) if "*" in rule.api_groups else set(groups) & rule.api_groups
        matched = [
            resource
            for resource in resources
            if "*" in rule.resources
            or resource in rule.resources
            or ("/" in resource and f"*/{resource.partition('/')[2]}" in rule.resources)
        ]
        # Resources served only by other groups than the rule's are not granted (unless that leaves nothing:
        # then name what the pattern test matched).
        served = [r for r in matched if RESOURCE_GROUPS.get(r) is None or RESOURCE_GROUPS[r] & rule_groups]
        pairs = {(verb, r) for r in served or matched for verb in verbs if "*" in rule.verbs or verb in rule.verbs}
        found |= pairs
        if rule.resource_names:
            names |= rule.resource_names
        else:
            unlimited = True
    ordered = [(verb, resource) for resource in resources for verb in verbs if (verb, resource) in found]
    return ordered, frozenset() if unlimited else frozenset(names)


def grant_text(rules: Iterable[PolicyRule], *patterns: Pattern, include_named: bool = False) -> str:
    """The verbs and resources of the patterns the rules grant, e.g. "list secrets", "create/patch deployments;
    update jobs", "impersonate users (only named: jane)"."""
    rules = tuple(rules)
    pairs: list[tuple[str, str]] = []
    names: set[str] = set()
    for pattern in patterns:
        found, limited_to = granted_pairs(rules, pattern, include_named=include_named)
        pairs += [pair for pair in found if pair not in pairs]
        names |= limited_to
    verbs_of: dict[str, list[str]] = {}
    for verb, resource in pairs:
        verbs_of.setdefault(resource, []).append(verb)
    resources_of: dict[tuple[str, ...], list[str]] = {}
    for resource, verbs in verbs_of.items():
        resources_of.setdefault(tuple(verbs), []).append(resource)
    text = "; ".join(f"{'/'.join(verbs)} {', '.join(resources)}" for verbs, resources in resources_of.items())
    return text + (f" (only named: {', '.join(sorted(names))})" if names else "")


def has_wildcard(rule: PolicyRule) -> bool:
    return "*" in rule.verbs or "*" in rule.resources or "*" in rule.api_groups or "*" in rule.non_resource_urls


def binding_capabilities(binding: Binding) -> frozenset[str]:
    """The SubjectCapability names a binding confers (cluster-scoped ones only from ClusterRoleBindings)."""
    rules = binding.rules
    cluster_wide = not binding.namespace
    caps: set[str] = set()
    if cluster_wide and any(rule.is_superuser for rule in rules):
        caps.add("cluster-admin")
    checks: list[tuple[str, Pattern, bool]] = [
        ("secrets-read", SECRETS_READ, False),
        ("exec", EXEC, False),
        ("escalate", ESCALATE, False),
        ("bind", BIND, False),
        ("impersonate", IMPERSONATE, True),
        ("create-pods", CREATE_PODS, False),
        ("create-pods", CREATE_WORKLOADS, False),
        ("token-create", TOKEN_CREATE, True),
    ]
    if cluster_wide:
        checks += [("nodes-proxy", NODES_PROXY, False), ("webhook-write", WEBHOOK_WRITE, False)]
    for capability, pattern, include_named in checks:
        if rules_grant(rules, pattern, include_named=include_named):
            caps.add(capability)
    if any(has_wildcard(rule) for rule in rules):
        caps.add("wildcard")
    return frozenset(caps)


def service_account_capabilities(
    snapshot: ClusterSnapshot, ctx: AuditContext, namespaces: Collection[str] | None = None
) -> list[SubjectCapability]:
    """Capabilities each ServiceAccount effectively holds (own bindings and its groups'), sorted; those of the
    ServiceAccounts in `namespaces` only, when given (a cluster-scope re-audit's sub-snapshot names the
    ServiceAccounts of ~1,000 namespaces, and keeps the capabilities of its own few)."""
    index = permission_index(snapshot, ctx)
    accounts: set[tuple[str, str]] = {(namespace_of(sa), name_of(sa)) for sa in snapshot.service_accounts}
    for binding in index.bindings:
        accounts.update((s.namespace, s.name) for s in binding.subjects if s.kind == "ServiceAccount")
    if namespaces is not None:
        accounts = {account for account in accounts if account[0] in namespaces}
    per_binding: dict[int, frozenset[str]] = {}
    results: list[SubjectCapability] = []
    for namespace, name in sorted(accounts):
        # is_excluded() of the ServiceAccount, without building the Subject (subject_username's form)
        if not namespace or f"{SA_USER_PREFIX}{namespace}:{name}".startswith(ctx.excluded_subject_prefixes):
            continue
        caps: set[str] = set()
        for key in service_account_keys(namespace, name):
            for position in index.by_subject.get(key, []):
                if position not in per_binding:
                    per_binding[position] = binding_capabilities(index.bindings[position])
                caps |= per_binding[position]
        results.extend(
            SubjectCapability(namespace=namespace, service_account=name, capability=cap) for cap in sorted(caps)
        )
    return results
