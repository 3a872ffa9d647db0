"""rule_grants (set checks) and RuleSet's remembered answers agree with the plain definition: some (verb, group,
resource) of the pattern is allowed by the rule (PolicyRule.allows_any_name)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.rbac import capabilities, permissions
from access_hygiene.engine.rbac.capabilities import Pattern, rule_grants, rules_grant
from access_hygiene.engine.rbac.permissions import PolicyRule, RuleSet

pytestmark = pytest.mark.unit

VERBS = st.sampled_from(["get", "list", "create", "update", "patch", "delete", "bind", "escalate", "impersonate", "*"])
GROUPS = st.sampled_from(["", "apps", "rbac.authorization.k8s.io", "authentication.k8s.io", "*"])
RESOURCES = st.sampled_from(["pods", "pods/exec", "pods/log", "*/exec", "secrets", "roles", "users", "nodes/proxy",
                             "serviceaccounts/token", "*"])  # fmt: skip
RULES = st.builds(
    PolicyRule,
    verbs=st.frozensets(VERBS, max_size=3),
    api_groups=st.frozensets(GROUPS, max_size=2),
    resources=st.frozensets(RESOURCES, max_size=3),
    resource_names=st.frozensets(st.sampled_from(["a", "b"]), max_size=1),
)
PATTERNS = st.tuples(
    st.lists(VERBS, min_size=1, max_size=3).map(tuple),
    st.lists(GROUPS, min_size=1, max_size=2).map(tuple),
    st.lists(RESOURCES.filter(lambda r: not r.startswith("*")), min_size=1, max_size=3).map(tuple),
)


def by_definition(rule: PolicyRule, pattern: Pattern, include_named: bool) -> bool:
    if rule.resource_names and not include_named:
        return False
    verbs, groups, resources = pattern
    return any(
        rule.allows_any_name(verb, group, *resource.partition("/")[::2])
        for verb in verbs
        for group in groups
        for resource in resources
    )


@settings(max_examples=500, deadline=None)
@given(rule=RULES, pattern=PATTERNS, include_named=st.booleans())
def test_rule_grants_matches_the_definition(rule: PolicyRule, pattern: Pattern, include_named: bool) -> None:
    assert rule_grants(rule, pattern, include_named=include_named) == by_definition(rule, pattern, include_named)


@settings(max_examples=200, deadline=None)
@given(rules=st.lists(RULES, max_size=4), pattern=PATTERNS, include_named=st.booleans())
def test_ruleset_remembers_the_same_answer(rules: list[PolicyRule], pattern: Pattern, include_named: bool) -> None:
    expected = any(by_definition(r, pattern, include_named) for r in rules)
    ruleset = RuleSet(rules)
    assert rules_grant(ruleset, pattern, include_named=include_named) is expected
    assert rules_grant(ruleset, pattern, include_named=include_named) is expected  # from the memo
    assert rules_grant(ruleset, pattern, include_named=not include_named) == any(
        by_definition(r, pattern, not include_named) for r in rules
    )
    assert ruleset == tuple(rules)
    assert ruleset.grants_everything == any(r.is_superuser for r in rules)


def test_bindings_of_one_role_share_its_ruleset() -> None:
    from access_hygiene.engine.ground.snapshot import ClusterSnapshot

    role = {"kind": "ClusterRole", "metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["secrets"],
                                                                      "verbs": ["get"]}]}  # fmt: skip
    bindings = [{"kind": "ClusterRoleBinding", "metadata": {"name": f"b{i}"},
                 "roleRef": {"kind": "ClusterRole", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}]}
                for i in range(2)]  # fmt: skip
    index = permissions.PermissionIndex.build(ClusterSnapshot.from_objects([role, *bindings]))
    first, second = index.bindings
    assert isinstance(first.rules, RuleSet)
    assert first.rules is second.rules
    assert rules_grant(first.rules, capabilities.SECRETS_READ)
    assert first.rules.masks is not None  # the answer is remembered (as bit masks) for the next binding of the role
