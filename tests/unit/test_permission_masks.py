"""The shortcuts of the audit's hot paths give the answers of the plain definitions: rules_grant() from a
RuleSet's bit masks (registered patterns), the ServiceAccount subject keys, "is this ServiceAccount bound",
and the one walk over the bindings that remembers each check's answer per (role, scope class)."""

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access_hygiene.engine.audit.runner import load_rules
from access_hygiene.engine.catalogue.binding_walk import BINDING_RULES, binding_walk, flagged
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac import capabilities, permissions
from access_hygiene.engine.rbac.capabilities import Pattern, pattern_masks, register_pattern, rule_grants, rules_grant
from access_hygiene.engine.rbac.permissions import (
    Binding,
    PolicyRule,
    RuleSet,
    UserInfo,
    permission_index,
    service_account_bindings,
    service_account_keys,
)
from access_hygiene.models.findings import Finding, ObjectRef, Severity, Subject
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

load_rules()  # registers every rule module's patterns and binding checks
REGISTERED: list[Pattern] = [pattern for pattern, _ in capabilities._PATTERNS.bits.values()]


def _tokens(position: int) -> list[str]:
    return sorted({token for pattern in REGISTERED for token in pattern[position]})


RESOURCE_TOKENS = _tokens(2)
# Every verb, group and resource a registered pattern names, `*`, `*/<subresource>` forms and strangers.
VERBS = st.sampled_from([*_tokens(0), "*", "watch", "use"])
GROUPS = st.sampled_from([*_tokens(1), "*", "example.com"])
RESOURCES = st.sampled_from(
    [*RESOURCE_TOKENS, "*", "widgets", "pods/log", *{f"*/{r.partition('/')[2]}" for r in RESOURCE_TOKENS if "/" in r}]
)
RULES = st.builds(
    PolicyRule,
    verbs=st.frozensets(VERBS, max_size=4),
    api_groups=st.frozensets(GROUPS, max_size=3),
    resources=st.frozensets(RESOURCES, max_size=4),
    resource_names=st.frozensets(st.sampled_from(["a", "admin"]), max_size=1),
)


def test_the_rule_modules_register_their_patterns() -> None:
    assert len(REGISTERED) >= 25  # 28 since issue 25 (per-verb secrets patterns gave way to grant_text)
    assert capabilities.SECRETS_READ in REGISTERED
    assert capabilities.IMPERSONATE in REGISTERED


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(RULES, max_size=4))
def test_masks_answer_like_rule_grants(rules: list[PolicyRule]) -> None:
    ruleset = RuleSet(rules)
    for pattern in REGISTERED:
        for include_named in (False, True):
            expected = any(rule_grants(r, pattern, include_named=include_named) for r in rules)
            assert rules_grant(ruleset, pattern, include_named=include_named) is expected, (pattern, include_named)
    assert ruleset.masks is not None


def test_a_pattern_registered_later_recomputes_the_masks() -> None:
    ruleset = RuleSet([PolicyRule(verbs=frozenset({"get"}), api_groups=frozenset({""}), resources=frozenset({"*"}))])
    assert rules_grant(ruleset, capabilities.SECRETS_READ)
    late: Pattern = (("get",), ("",), ("configmaps-late-test",))
    register_pattern(late)
    assert rules_grant(ruleset, late)
    assert not rules_grant(ruleset, (("get",), ("apps",), ("x",)))  # unregistered: the plain path


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("ns", "app"), ("kube-system", "default"), ("ns", "a:b"), ("", "app"), ("ns", ""), ("a-b", "c.d")],
)
def test_service_account_keys(namespace: str, name: str) -> None:
    info = UserInfo.of(Subject(kind="ServiceAccount", namespace=namespace, name=name))
    assert service_account_keys(namespace, name) == info.subject_keys()


def _snapshot(seed: int) -> ClusterSnapshot:
    """Roles shared between namespaces (kube-system, a privileged one, others) and cluster-wide bindings."""
    rng = random.Random(seed)
    verbs = ["get", "list", "create", "update", "patch", "delete", "*", "bind", "escalate", "impersonate"]
    groups = ["", "apps", "rbac.authorization.k8s.io", "certificates.k8s.io", "*"]
    resources = ["pods", "pods/exec", "secrets", "configmaps", "serviceaccounts/token", "roles", "services",
                 "certificatesigningrequests/approval", "signers", "nodes/proxy", "*"]  # fmt: skip

    def rules() -> list[dict[str, Any]]:
        return [
            {"verbs": rng.sample(verbs, rng.randint(1, 3)), "apiGroups": rng.sample(groups, rng.randint(1, 2)),
             "resources": rng.sample(resources, rng.randint(1, 3)),
             **({"resourceNames": ["admin"]} if rng.random() < 0.2 else {})}
            for _ in range(rng.randint(1, 3))
        ]  # fmt: skip

    namespaces = ["kube-system", "ops", "team-a", "team-b"]
    objects: list[dict[str, Any]] = []
    for i in range(6):
        objects.append({"kind": "ClusterRole", "metadata": {"name": f"cr-{i}"}, "rules": rules()})
    for namespace in namespaces:
        objects.append({"kind": "Role", "metadata": {"name": "local", "namespace": namespace}, "rules": rules()})
        objects.append({"kind": "ServiceAccount", "metadata": {"name": "app", "namespace": namespace}})
    for i in range(30):
        namespace = rng.choice([*namespaces, ""])
        role = {"kind": "Role", "name": "local"} if namespace and rng.random() < 0.3 else {
            "kind": "ClusterRole", "name": f"cr-{rng.randint(0, 6)}"}  # fmt: skip
        subjects = [
            {"kind": "ServiceAccount", "name": "app", "namespace": rng.choice(namespaces)},
            {"kind": rng.choice(["User", "Group"]), "name": rng.choice(["alice", "system:kube-x", "devs"])},
        ]
        kind = "RoleBinding" if namespace else "ClusterRoleBinding"
        metadata = {"name": f"b-{i}", **({"namespace": namespace} if namespace else {})}
        objects.append({"kind": kind, "metadata": metadata, "roleRef": role, "subjects": subjects})
    return ClusterSnapshot.from_objects(objects)


@pytest.mark.parametrize("seed", range(8))
def test_the_walk_remembers_only_what_does_not_depend_on_the_binding(seed: int) -> None:
    """flagged() (answers remembered per role and scope class) == every check run on every binding."""
    snapshot = _snapshot(seed)
    ctx = AuditContext(now=PINNED_NOW, privileged_namespaces=frozenset({"kube-system", "ops"}))
    index = permission_index(snapshot, ctx)
    for rule_id, binding_rule in BINDING_RULES.items():
        expected = []
        for binding, subjects, superuser in binding_walk(snapshot, ctx):
            skipped = superuser and not binding_rule.include_superuser
            if skipped or (binding_rule.cluster_scoped and binding.namespace):
                continue
            detail = binding_rule.check(binding, ctx, index)
            if detail is not None:
                expected.append((binding, detail, subjects))
        assert flagged(snapshot, ctx, rule_id) == expected, rule_id


@pytest.mark.parametrize("seed", range(4))
def test_service_account_bound_matches_its_bindings(seed: int) -> None:
    snapshot = _snapshot(seed)
    ctx = AuditContext(now=PINNED_NOW)
    index = permission_index(snapshot, ctx)
    accounts = {(s.namespace, s.name) for b in index.bindings for s in b.subjects if s.kind == "ServiceAccount"}
    accounts |= {("team-a", "nobody"), ("ops", "app")}
    for namespace, name in sorted(accounts):
        expected = bool(service_account_bindings(snapshot, ctx, namespace, name))
        assert index.service_account_bound(namespace, name) is expected, (namespace, name)


@pytest.mark.parametrize("subject", [Subject(kind="ServiceAccount", namespace="ns", name="app"), None])
def test_trusted_findings_are_the_validated_ones(subject: Subject | None) -> None:
    ref = ObjectRef(kind="RoleBinding", name="rb", namespace="ns", api_version=permissions.RBAC_API_VERSION)
    validated = Finding(rule_id="AH-RBAC-009", severity=Severity.HIGH, namespace="ns", object=ref, subject=subject,
                        message="m")  # fmt: skip
    trusted = Finding.trusted("AH-RBAC-009", Severity.HIGH, "ns", ref, "m", subject)
    assert trusted == validated
    assert hash(trusted) == hash(validated)
    assert repr(trusted) == repr(validated)
    assert trusted.model_dump_json(indent=2) == validated.model_dump_json(indent=2)
    assert trusted.model_fields_set == validated.model_fields_set
    exempted = trusted.model_copy(update={"exempted": True, "exemption_reason": "r"})
    assert exempted == validated.model_copy(update={"exempted": True, "exemption_reason": "r"})
    assert not trusted.exempted


def test_trusted_refs_and_subjects_are_the_validated_ones() -> None:
    pairs = [
        (ObjectRef.trusted("Role", "r", "ns", "v"), ObjectRef(kind="Role", name="r", namespace="ns", api_version="v")),
        (Subject.trusted("User", "alice"), Subject(kind="User", name="alice")),
        (Subject.trusted("ServiceAccount", "app", "ns"), Subject(kind="ServiceAccount", name="app", namespace="ns")),
    ]
    for trusted, validated in pairs:
        assert trusted == validated
        assert hash(trusted) == hash(validated)
        assert repr(trusted) == repr(validated)
        assert str(trusted) == str(validated)
        assert trusted.model_dump_json() == validated.model_dump_json()
        assert trusted.model_fields_set == validated.model_fields_set


@settings(max_examples=300, deadline=None)
@given(rules=st.lists(RULES, min_size=1, max_size=4), namespace=st.sampled_from(["", "team", "kube-system"]))
def test_a_check_flags_only_roles_that_grant_what_it_requires(rules: list[PolicyRule], namespace: str) -> None:
    """The walk (and AH-RBAC-024) skip a check for a role whose masks show none of its required patterns: sound
    only if the check could not have flagged that role anyway."""
    ruleset = RuleSet(rules)
    named, unnamed = pattern_masks(ruleset)
    ref = ObjectRef.trusted("Role", "r", namespace, permissions.RBAC_API_VERSION)
    binding = Binding(ref, ref, namespace, (Subject.trusted("User", "u"),), ruleset, True, False)
    index = permission_index(ClusterSnapshot(), AuditContext(now=PINNED_NOW))
    ctx = AuditContext(now=PINNED_NOW, privileged_namespaces=frozenset({"kube-system"}))
    for rule_id, binding_rule in BINDING_RULES.items():
        if binding_rule.requires is None or named & binding_rule.requires[0] or unnamed & binding_rule.requires[1]:
            continue
        assert binding_rule.check(binding, ctx, index) is None, rule_id
