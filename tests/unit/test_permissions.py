"""PermissionIndex: RBAC authorizer semantics on a fixed graph (fixtures/permissions/graph.yaml), table-driven.
The same semantics are checked against a real kube-apiserver in tests/cluster/test_rbac_differential.py."""

from pathlib import Path

import pytest
import yaml

from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.selectors import selector_matches
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.capabilities import service_account_capabilities
from access_hygiene.engine.rbac.permissions import PermissionIndex, UserInfo, parse_subject, permission_index
from access_hygiene.models.findings import Subject
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

GRAPH = Path(__file__).parent / "fixtures" / "permissions" / "graph.yaml"
ALICE = Subject(kind="User", name="alice")
BOB = Subject(kind="User", name="bob")
CI = Subject(kind="ServiceAccount", name="ci", namespace="apps")
WEB = Subject(kind="ServiceAccount", name="web", namespace="apps")
PROMETHEUS = Subject(kind="ServiceAccount", name="prometheus", namespace="obs")
DEV = UserInfo("dana", frozenset({"devs", "system:authenticated"}))
ROOT = UserInfo("root", frozenset({"system:masters"}))


@pytest.fixture(scope="module")
def index() -> PermissionIndex:
    return PermissionIndex.build(ClusterSnapshot.from_objects(yaml.safe_load_all(GRAPH.read_text())))


# (who, verb, resource, namespace, api_group, name, expected)
ALLOWS = [
    (ALICE, "get", "pods", "apps", "", "", True),
    (ALICE, "list", "pods", "apps", "", "", True),
    (ALICE, "delete", "pods", "apps", "", "", False),
    (ALICE, "get", "pods", "other", "", "", False),  # RoleBinding to a ClusterRole: its namespace only
    (ALICE, "get", "pods", "", "", "", False),  # ... and not cluster-wide
    (ALICE, "get", "pods/log", "apps", "", "", True),
    (ALICE, "get", "pods/exec", "apps", "", "", False),  # subresources are separate resources
    (ALICE, "get", "pods", "apps", "apps", "", False),  # wrong API group
    (CI, "create", "deployments", "apps", "apps", "", True),  # SA subject defaults to the binding's namespace
    (CI, "create", "deployments", "apps", "", "", False),
    (CI, "update", "deployments/scale", "apps", "apps", "", True),  # via system:serviceaccounts:apps and */scale
    (WEB, "update", "statefulsets/scale", "apps", "apps", "", True),
    (WEB, "update", "statefulsets", "apps", "apps", "", False),  # */scale does not match the parent resource
    (WEB, "update", "deployments/scale", "other", "apps", "", False),
    (WEB, "create", "deployments", "apps", "apps", "", False),
    (DEV, "get", "secrets", "apps", "", "db-password", True),  # resourceNames, cluster-wide binding
    (DEV, "get", "secrets", "apps", "", "other", False),
    (DEV, "get", "secrets", "apps", "", "", False),  # an unnamed request never matches resourceNames
    (DEV, "list", "secrets", "apps", "", "", False),
    (BOB, "get", "anything", "apps", "", "", False),  # missing ClusterRole grants nothing
    (BOB, "create", "deployments", "other", "apps", "", False),  # Role lookup is in the binding's namespace
    (PROMETHEUS, "create", "servicemonitors", "obs", "monitoring.coreos.com", "", True),  # transitive aggregation
    (PROMETHEUS, "list", "events", "", "", "", True),
    (PROMETHEUS, "delete", "nodes", "", "", "", False),  # stored rules of an aggregated role are ignored
    (ROOT, "delete", "nodes", "", "", "", True),  # system:masters bypasses RBAC
    (Subject(kind="Group", name="devs"), "get", "secrets", "x", "", "db-password", True),
]


@pytest.mark.parametrize(("who", "verb", "resource", "namespace", "group", "name", "expected"), ALLOWS)
def test_allows(
    index: PermissionIndex,
    who: Subject | UserInfo,
    verb: str,
    resource: str,
    namespace: str,
    group: str,
    name: str,
    expected: bool,
) -> None:
    assert index.allows(who, verb, resource, namespace, api_group=group, name=name) is expected


def test_subresource_argument_equals_slash_form(index: PermissionIndex) -> None:
    assert index.allows(ALICE, "get", "pods", "apps", subresource="log")
    assert not index.allows(ALICE, "get", "pods", "apps", subresource="exec")


def test_non_resource_urls(index: PermissionIndex) -> None:
    assert index.allows_url(ALICE, "get", "/healthz")
    assert index.allows_url(ALICE, "get", "/metrics/cadvisor")
    assert not index.allows_url(ALICE, "get", "/metrics")
    assert not index.allows_url(UserInfo("system:anonymous", frozenset({"system:unauthenticated"})), "get", "/healthz")


def test_who_can(index: PermissionIndex) -> None:
    pairs = index.who_can("update", "deployments/scale", "apps", api_group="apps")
    assert [(str(s), g.via_binding.name, g.resource) for s, g in pairs] == [
        ("Group:system:serviceaccounts:apps", "sas-scale", "*/scale")
    ]
    assert [str(s) for s, _ in index.who_can("get", "pods", "apps")] == ["User:alice"]
    assert index.who_can("get", "pods", "") == []
    assert [str(s) for s, _ in index.who_can("get", "secrets", "apps", name="db-password")] == ["Group:devs"]


def test_grants_for_includes_group_grants(index: PermissionIndex) -> None:
    grants = index.grants_for(CI)
    via = {(str(g.subject), g.via_binding.name) for g in grants}
    assert via == {("system:serviceaccount:apps:ci", "ci-deploys"), ("Group:system:serviceaccounts:apps", "sas-scale"),
                   ("Group:system:authenticated", "everyone-health")}  # fmt: skip
    assert {(g.verb, g.api_group, g.resource) for g in grants if g.via_binding.name == "ci-deploys"} == {
        ("create", "apps", "deployments"),
        ("update", "apps", "deployments"),
    }
    assert {g.non_resource_url for g in grants if g.non_resource_url} == {"/healthz", "/metrics/*"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system:serviceaccount:ns:sa", Subject(kind="ServiceAccount", namespace="ns", name="sa")),
        ("ServiceAccount:ns/sa", Subject(kind="ServiceAccount", namespace="ns", name="sa")),
        ("User:alice", Subject(kind="User", name="alice")),
        ("group:system:masters", Subject(kind="Group", name="system:masters")),
        ("bob", Subject(kind="User", name="bob")),
    ],
)
def test_parse_subject(text: str, expected: Subject) -> None:
    assert parse_subject(text) == expected


@pytest.mark.parametrize("text", ["system:serviceaccount:ns", "ServiceAccount:sa", ""])
def test_parse_subject_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"subject|service account"):
        parse_subject(text)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ],
)
def test_selector_matches(selector: dict[str, object], labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def test_index_is_cached_per_snapshot() -> None:
    snapshot = ClusterSnapshot.from_objects(yaml.safe_load_all(GRAPH.read_text()))
    ctx = AuditContext(now=PINNED_NOW)
    assert permission_index(snapshot, ctx) is permission_index(snapshot, ctx)
    assert permission_index(ClusterSnapshot(), ctx) is not permission_index(snapshot, ctx)


def test_service_account_capabilities() -> None:
    objects = [
        *yaml.safe_load_all(GRAPH.read_text()),
        {"kind": "ServiceAccount", "metadata": {"name": "idle", "namespace": "apps"}},
        {"kind": "ClusterRoleBinding", "metadata": {"name": "root"},
         "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "root", "namespace": "ops"},
                      {"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}]},
        {"kind": "RoleBinding", "metadata": {"name": "exec", "namespace": "apps"},
         "roleRef": {"kind": "Role", "name": "exec"}, "subjects": [{"kind": "ServiceAccount", "name": "web"}]},
        {"kind": "Role", "metadata": {"name": "exec", "namespace": "apps"},
         "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]},
    ]  # fmt: skip
    caps = service_account_capabilities(ClusterSnapshot.from_objects(objects), AuditContext(now=PINNED_NOW))
    by_sa: dict[str, set[str]] = {}
    for cap in caps:
        by_sa.setdefault(f"{cap.namespace}/{cap.service_account}", set()).add(cap.capability)
    assert by_sa["ops/root"] >= {"cluster-admin", "secrets-read", "exec", "escalate", "bind", "impersonate",
                                 "nodes-proxy", "create-pods", "token-create", "webhook-write", "wildcard"}  # fmt: skip
    assert by_sa["apps/web"] == {"exec", "wildcard"}  # wildcard: `*/scale` via system:serviceaccounts:apps
    assert "apps/idle" in by_sa
    assert "kube-system/kube-proxy" not in by_sa  # excluded built-in subject
    assert "obs/prometheus" not in by_sa  # servicemonitors and events: nothing sensitive
