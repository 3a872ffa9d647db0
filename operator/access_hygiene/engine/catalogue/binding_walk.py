"""The one walk over the bindings that every binding rule (catalogue/rbac.py, catalogue/rbac_tampering.py) shares.

A binding rule registers a check with @binding_check: given a binding, it says what the binding grants that
the rule reports (a description), or None. The walk visits each non-bootstrap binding with non-excluded
subjects once, runs every registered check on it, and files the binding under each rule that flags it; the
rules then only turn their list into findings. Most checks depend only on the binding's role and on its
scope (cluster-wide, a privileged namespace, kube-system, another namespace): their answers are remembered
per (role, scope class), so the bindings of one role are judged once per scope class.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from access_hygiene.engine.catalogue.registry import RULES
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.capabilities import (
    Pattern,
    grant_text,
    pattern_bit,
    pattern_masks,
    register_pattern,
    rules_grant,
)
from access_hygiene.engine.rbac.permissions import Binding, PermissionIndex, RuleSet, is_excluded, permission_index
from access_hygiene.models.findings import Severity, Subject

# What the rule reports about the binding (e.g. "can exec/attach into pods"), or None.
BindingCheck = Callable[[Binding, AuditContext, PermissionIndex], str | None]


@dataclass(frozen=True)
class BindingRule:
    check: BindingCheck
    cluster_scoped: bool  # ClusterRoleBindings only
    include_superuser: bool  # also bindings that grant everything (otherwise left to AH-RBAC-001)
    per_binding: bool  # the answer depends on more than the role and the scope class (not remembered)
    raised_cluster_wide: bool  # severity raised one step for ClusterRoleBindings (besides privileged namespaces)
    # (patterns counting resourceNames-limited rules, patterns not counting them) as pattern_masks() bits, or None:
    # the check can flag only a role that grants one of them, so the walk tests the role's masks first and calls
    # the check only then (binding_pattern_check, or binding_check's requires/requires_named).
    requires: tuple[int, int] | None = None


BINDING_RULES: dict[str, BindingRule] = {}

# (binding, its non-excluded subjects, grants everything) for every non-bootstrap binding with such subjects.
WalkEntry = tuple[Binding, tuple[Subject, ...], bool]
# (binding, what the check said, the binding's non-excluded subjects), in the order of the bindings.
Flagged = list[tuple[Binding, str, tuple[Subject, ...]]]

# Stands for "a namespace that is neither privileged nor kube-system" (no namespace name contains `*`).
_OTHER_NAMESPACE = "*"


def binding_check(
    rule_id: str,
    *,
    cluster_scoped: bool = False,
    include_superuser: bool = False,
    per_binding: bool = False,
    raised_cluster_wide: bool = False,
    requires: Iterable[Pattern] = (),
    requires_named: Iterable[Pattern] = (),
) -> Callable[[BindingCheck], BindingCheck]:
    """Register the check of a binding rule (the rule itself is registered with @rule and reads flagged()).
    Every binding rule is also what AH-RBAC-024 (catalogue/latent_roles.py) judges an unbound role by. requires:
    patterns one of which the role must grant for the check to flag it (requires_named: counting resourceNames-limited
    rules); the walk then skips the check for other roles from their pattern masks."""
    unnamed_mask = _bits(requires)
    named_mask = _bits(requires_named)

    def register(check: BindingCheck) -> BindingCheck:
        if rule_id in BINDING_RULES:
            raise ValueError(f"binding check {rule_id} registered twice")
        needs = (named_mask, unnamed_mask) if named_mask or unnamed_mask else None
        BINDING_RULES[rule_id] = BindingRule(
            check, cluster_scoped, include_superuser, per_binding, raised_cluster_wide, needs
        )
        return check

    return register


def _bits(patterns: Iterable[Pattern]) -> int:
    mask = 0
    for pattern in patterns:
        mask |= pattern_bit(register_pattern(pattern))
    return mask


def binding_severity(rule_id: str, namespace: str, ctx: AuditContext) -> Severity:
    """The severity of a binding rule's finding on a binding in this namespace ("" = a ClusterRoleBinding):
    raised one step in a privileged namespace, and cluster-wide for the rules registered so."""
    base = RULES[rule_id].severity
    raised = namespace in ctx.privileged_namespaces or (not namespace and BINDING_RULES[rule_id].raised_cluster_wide)
    return base.raised() if raised else base


def binding_pattern_check(
    rule_id: str, pattern: Pattern, detail: str, *, include_named: bool = False, cluster_scoped: bool = False
) -> None:
    """Register the check of a rule that flags bindings whose role grants the pattern. detail is reported with
    `{granted}` replaced by the verbs and resources of the pattern the role grants (capabilities.grant_text)."""

    def check(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> str | None:
        if not rules_grant(binding.rules, pattern, include_named=include_named):
            return None
        return detail.format(granted=grant_text(binding.rules, pattern, include_named=include_named))

    needs = (pattern,)
    binding_check(rule_id, cluster_scoped=cluster_scoped, requires=() if include_named else needs,
                  requires_named=needs if include_named else ())(check)  # fmt: skip


def grants_everything(binding: Binding) -> bool:
    rules = binding.rules
    return rules.grants_everything if isinstance(rules, RuleSet) else any(r.is_superuser for r in rules)


def binding_walk(snapshot: ClusterSnapshot, ctx: AuditContext) -> list[WalkEntry]:
    """Non-bootstrap bindings with their non-excluded subjects (cached per audit in ctx.cache)."""
    index = permission_index(snapshot, ctx)
    cached = ctx.cache.get("rbac_binding_walk")
    if cached is not None and cached[0] is index:
        return cached[1]  # type: ignore[no-any-return]
    excluded: dict[int, bool] = {}  # subjects are shared between bindings (one object per subject in the index)
    walk: list[WalkEntry] = []
    for binding in index.bindings:
        if binding.bootstrap:
            continue
        kept = []
        for subject in binding.subjects:
            skip = excluded.get(id(subject))
            if skip is None:
                skip = excluded[id(subject)] = is_excluded(subject, ctx)
            if not skip:
                kept.append(subject)
        if kept:
            walk.append((binding, tuple(kept), grants_everything(binding)))
    ctx.cache["rbac_binding_walk"] = (index, walk)
    return walk


def _scope_class(namespace: str, ctx: AuditContext) -> str:
    if not namespace or namespace in ctx.privileged_namespaces or namespace == "kube-system":
        return namespace
    return _OTHER_NAMESPACE


def flagged(snapshot: ClusterSnapshot, ctx: AuditContext, rule_id: str) -> Flagged:
    """The bindings the rule's check flags, with its description and their non-excluded subjects."""
    index = permission_index(snapshot, ctx)
    cached = ctx.cache.get("rbac_flagged")
    if cached is None or cached[0] is not index:
        cached = ctx.cache["rbac_flagged"] = (index, _walk_checks(snapshot, ctx, index))
    result: dict[str, Flagged] = cached[1]
    return result[rule_id]


def _checks(
    binding: Binding, ctx: AuditContext, index: PermissionIndex, rules: list[tuple[str, BindingRule]], superuser: bool
) -> list[tuple[str, str]]:
    """(rule id, what its check said) for each of the rules that flags the binding."""
    cluster_wide = not binding.namespace
    granted = binding.rules
    named, unnamed = pattern_masks(granted) if isinstance(granted, RuleSet) else (None, None)
    details = []
    for rule_id, r in rules:
        if (r.cluster_scoped and not cluster_wide) or (superuser and not r.include_superuser):
            continue
        needs = r.requires
        if (
            needs is not None
            and named is not None
            and unnamed is not None
            and not (named & needs[0] or unnamed & needs[1])
        ):
            continue  # the role grants none of the patterns the check needs: it cannot flag it
        found = r.check(binding, ctx, index)
        if found is not None:
            details.append((rule_id, found))
    return details


def binding_rules_flagging(binding: Binding, ctx: AuditContext, index: PermissionIndex) -> list[tuple[str, str]]:
    """(rule id, what its check said) for every binding rule that flags this binding, in registration order:
    what a binding of these rules in this scope is reported for (AH-RBAC-024 asks it of a role nothing binds)."""
    return _checks(binding, ctx, index, list(BINDING_RULES.items()), grants_everything(binding))


def _walk_checks(snapshot: ClusterSnapshot, ctx: AuditContext, index: PermissionIndex) -> dict[str, Flagged]:
    result: dict[str, Flagged] = {rule_id: [] for rule_id in BINDING_RULES}
    remembered = [(rule_id, r) for rule_id, r in BINDING_RULES.items() if not r.per_binding]
    per_binding = [(rule_id, r) for rule_id, r in BINDING_RULES.items() if r.per_binding]
    # (id(role's rules), scope class) -> (the rules, kept alive for the id; [(rule id, description)])
    memo: dict[tuple[int, str], tuple[object, list[tuple[str, str]]]] = {}
    for entry in binding_walk(snapshot, ctx):
        binding, subjects, superuser = entry
        key = (id(binding.rules), _scope_class(binding.namespace, ctx))
        known = memo.get(key)
        if known is None:
            known = memo[key] = (binding.rules, _checks(binding, ctx, index, remembered, superuser))
        for rule_id, said in known[1]:
            result[rule_id].append((binding, said, subjects))
        for rule_id, said in _checks(binding, ctx, index, per_binding, superuser):
            result[rule_id].append((binding, said, subjects))
    return result
