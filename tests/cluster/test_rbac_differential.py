"""Differential proof of the permission engine: random RBAC graphs are loaded into the real control plane
and PermissionIndex.allows must agree with SubjectAccessReview on every sampled request (100%)."""

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access_hygiene.engine.rbac.permissions import PermissionIndex, PolicyRule, UserInfo, resolve_cluster_roles
from access_hygiene.k8s import resources
from access_hygiene.k8s.snapshot_loader import load_snapshot
from access_hygiene.models.findings import Subject
from tests.cluster.conftest import wait_for_authorizer
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

RBAC = "rbac.authorization.k8s.io"
VERBS = ["get", "list", "create", "delete", "escalate", "*"]
GROUPS = ["", "apps", "*"]
RESOURCES = ["pods", "secrets", "configmaps", "deployments", "nodes", "pods/exec", "pods/log",
             "deployments/scale", "*/scale", "*"]  # fmt: skip
NAMES = ["one", "two"]
SELECTOR_VALUES = ["x", "y"]

rules_st = st.lists(
    st.fixed_dictionaries(
        {
            "verbs": st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True),
            "apiGroups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2, unique=True),
            "resources": st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True),
        },
        optional={"resourceNames": st.lists(st.sampled_from(NAMES), min_size=1, max_size=2, unique=True)},
    ),
    min_size=1,
    max_size=3,
)
# Subjects: ("User", name) | ("Group", name) | ("ServiceAccount", sa, namespace index or None = binding's)
subject_st = st.one_of(
    st.tuples(st.just("User"), st.sampled_from(["alice", "bob"])),
    st.tuples(st.just("Group"), st.sampled_from(["devs", "ops", "system:authenticated", "system:serviceaccounts:@0"])),
    st.tuples(st.just("ServiceAccount"), st.sampled_from(["sa1", "sa2"]), st.sampled_from([0, 1, None])),
)
cluster_role_st = st.fixed_dictionaries(
    {
        "rules": rules_st,
        "label": st.sampled_from([None, *SELECTOR_VALUES]),
        # Aggregating roles select source roles by label (matchLabels or matchExpressions In).
        "aggregate": st.sampled_from([None, "x", "y", "x|y"]),
    }
)
role_st = st.fixed_dictionaries({"namespace": st.sampled_from([0, 1]), "rules": rules_st})
binding_st = st.fixed_dictionaries(
    {
        "namespace": st.sampled_from([0, 1, None]),  # None: ClusterRoleBinding
        "role_kind": st.sampled_from(["Role", "ClusterRole"]),
        "role_index": st.integers(min_value=0, max_value=4),  # beyond the list: a missing role
        "subjects": st.lists(subject_st, min_size=1, max_size=3),
    }
)
query_st = st.tuples(
    st.integers(min_value=0, max_value=6),  # identity
    st.sampled_from(["get", "list", "create", "delete", "escalate", "update"]),
    st.sampled_from([*GROUPS[:2], "rbac.authorization.k8s.io"]),
    st.sampled_from(["pods", "secrets", "configmaps", "deployments", "nodes", "roles"]),
    st.sampled_from(["", "exec", "log", "scale"]),
    st.sampled_from([0, 1, None]),  # namespace index; None = cluster-wide request
    st.sampled_from(["", *NAMES, "three"]),
)
graph_st = st.fixed_dictionaries(
    {
        "cluster_roles": st.lists(cluster_role_st, min_size=2, max_size=5),
        "roles": st.lists(role_st, min_size=1, max_size=3),
        "bindings": st.lists(binding_st, min_size=2, max_size=6),
        "queries": st.lists(query_st, min_size=30, max_size=30),
        "seed": st.integers(min_value=0, max_value=2**32),
    }
)


@dataclass
class Graph:
    namespaces: list[str]
    cluster_roles: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    bindings: list[dict[str, Any]]
    identities: list[UserInfo]


def _rbac(kind: str, name: str, namespace: str = "", **body: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, **({"namespace": namespace} if namespace else {})}
    if "labels" in body:
        metadata["labels"] = body.pop("labels")
    return {"apiVersion": f"{RBAC}/v1", "kind": kind, "metadata": metadata, **body}


def build_graph(spec: dict[str, Any], run: str) -> Graph:
    namespaces = [f"diff-{run}-a", f"diff-{run}-b"]
    label_key = f"diff.accesshygiene.io/agg-{run}"
    cluster_roles = []
    for i, cr in enumerate(spec["cluster_roles"]):
        body: dict[str, Any] = {"labels": {label_key: cr["label"]}} if cr["label"] else {}
        if cr["aggregate"]:
            values = cr["aggregate"].split("|")
            selector = (
                {"matchLabels": {label_key: values[0]}}
                if len(values) == 1
                else {"matchExpressions": [{"key": label_key, "operator": "In", "values": values}]}
            )
            body["aggregationRule"] = {"clusterRoleSelectors": [selector]}
        else:
            body["rules"] = cr["rules"]
        cluster_roles.append(_rbac("ClusterRole", f"diff-{run}-cr{i}", **body))
    roles = [
        _rbac("Role", f"role{i}", namespaces[r["namespace"]], rules=r["rules"]) for i, r in enumerate(spec["roles"])
    ]
    bindings = []
    for i, b in enumerate(spec["bindings"]):
        namespace = namespaces[b["namespace"]] if b["namespace"] is not None else ""
        role_kind = "ClusterRole" if not namespace else b["role_kind"]
        # A role index beyond the generated ones (or a Role of the other namespace) is a missing role.
        role_name = f"diff-{run}-cr{b['role_index']}" if role_kind == "ClusterRole" else f"role{b['role_index']}"
        subjects = []
        for s in b["subjects"]:
            if s[0] == "ServiceAccount":
                sa_namespace = namespaces[s[2]] if s[2] is not None else ""
                if not namespace and not sa_namespace:
                    sa_namespace = namespaces[0]  # the API requires a namespace in ClusterRoleBindings
                subjects.append(
                    {"kind": "ServiceAccount", "name": s[1], **({"namespace": sa_namespace} if sa_namespace else {})}
                )
            else:
                subjects.append({"kind": s[0], "name": s[1].replace("@0", namespaces[0]), "apiGroup": RBAC})
        kind = "RoleBinding" if namespace else "ClusterRoleBinding"
        name = f"rb{i}" if namespace else f"diff-{run}-crb{i}"
        bindings.append(
            _rbac(kind, name, namespace, roleRef={"apiGroup": RBAC, "kind": role_kind, "name": role_name},
                  subjects=subjects)
        )  # fmt: skip
    users = [
        UserInfo("alice", frozenset({"system:authenticated"})),
        UserInfo("bob", frozenset({"system:authenticated", "devs"})),
        UserInfo("carol", frozenset({"system:authenticated", "ops", "devs"})),
    ]
    service_accounts = [
        UserInfo.of(Subject(kind="ServiceAccount", namespace=namespace, name=name))
        for namespace in namespaces
        for name in ("sa1", "sa2")
    ]
    identities = users + service_accounts
    return Graph(namespaces, cluster_roles, roles, bindings, identities)


def subject_access_review(api: Any, user: UserInfo, attributes: dict[str, str]) -> bool:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"user": user.name, "groups": sorted(user.groups), "resourceAttributes": attributes},
    }
    review = resources.request(api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=body)
    return bool(review["status"].get("allowed"))


def wait_for_aggregation(api: Any, graph: Graph, timeout: float = 60.0) -> tuple[PermissionIndex, PermissionIndex]:
    """Load the live snapshot once the aggregation controller has converged on the generated roles.
    Returns the index under test (aggregated rules stripped) and one over the stored rules (to aim queries)."""
    names = {cr["metadata"]["name"] for cr in graph.cluster_roles if "aggregationRule" in cr}
    deadline = time.monotonic() + timeout
    while True:
        snapshot = load_snapshot(api)
        expected = resolve_cluster_roles(snapshot.cluster_roles)
        live = {
            cr["metadata"]["name"]: {PolicyRule.parse(r) for r in cr.get("rules") or []}
            for cr in snapshot.cluster_roles
            if cr["metadata"]["name"] in names
        }
        if all(live[name] == set(expected[name]) for name in names):
            stored = PermissionIndex.build(snapshot)
            # The engine must resolve aggregation itself (as for manifests), not read the controller's output.
            for cr in snapshot.cluster_roles:
                if cr["metadata"]["name"] in names:
                    cr.pop("rules", None)
            return PermissionIndex.build(snapshot), stored
        if time.monotonic() > deadline:
            diff = {name: (live[name], set(expected[name])) for name in names if live[name] != set(expected[name])}
            raise AssertionError(f"aggregated ClusterRoles never matched the engine's resolution: {diff}")
        time.sleep(0.5)


@pytest.fixture
def admin_api(cluster: Cluster) -> Iterator[Any]:
    with cluster.api_client() as api:
        yield api


def _create_all(api: Any, graph: Graph) -> None:
    for namespace in graph.namespaces:
        resources.apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for obj in [*graph.cluster_roles, *graph.roles, *graph.bindings]:
        resources.apply(api, obj)


def _delete_all(api: Any, graph: Graph) -> None:
    for obj in [*graph.bindings, *graph.roles, *graph.cluster_roles]:
        meta = obj["metadata"]
        resources.delete(api, obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace", ""))
    for namespace in graph.namespaces:
        resources.delete(api, "v1", "Namespace", namespace)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=graph_st)
def test_allows_matches_subject_access_review(admin_api: Any, spec: dict[str, Any]) -> None:
    graph = build_graph(spec, uuid.uuid4().hex[:6])
    _create_all(admin_api, graph)
    try:
        index, stored = wait_for_aggregation(admin_api, graph)
        # The graph (and the deletion of the previous example's) is in the store; the authorizer's cache follows.
        wait_for_authorizer(admin_api)
        queries = [_query(graph, q) for q in spec["queries"]]
        queries += _targeted_queries(graph, stored, random.Random(spec["seed"]))
        mismatches = []
        for user, attributes in queries:
            expected = subject_access_review(admin_api, user, attributes)
            actual = index.allows(
                user,
                attributes["verb"],
                attributes["resource"],
                attributes["namespace"],
                api_group=attributes["group"],
                name=attributes["name"],
                subresource=attributes["subresource"],
            )
            if actual != expected:
                mismatches.append((user, attributes, f"engine={actual} apiserver={expected}"))
        assert not mismatches, f"{len(mismatches)}/{len(queries)} disagreements: {mismatches}\ngraph: {graph}"
    finally:
        _delete_all(admin_api, graph)


def _query(graph: Graph, q: tuple[Any, ...]) -> tuple[UserInfo, dict[str, str]]:
    identity, verb, group, resource, subresource, namespace_index, name = q
    namespace = graph.namespaces[namespace_index] if namespace_index is not None else ""
    attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": resource,
                  "subresource": subresource, "name": name}  # fmt: skip
    return graph.identities[identity], attributes


def _concrete(rule: PolicyRule, rng: random.Random) -> tuple[str, str, str, str, str]:
    """A request the rule matches: (verb, group, resource, subresource, name), wildcards made concrete."""
    verb = rng.choice(sorted(rule.verbs))
    group = rng.choice(sorted(rule.api_groups))
    resource_text = rng.choice(sorted(rule.resources))
    verb = "update" if verb == "*" else verb
    group = "apps" if group == "*" else group
    resource_text = {"*": "secrets", "*/scale": "deployments/scale"}.get(resource_text, resource_text)
    resource, _, subresource = resource_text.partition("/")
    name = rng.choice(sorted(rule.resource_names)) if rule.resource_names else ""
    return verb, group, resource, subresource, name


def _targeted_queries(
    graph: Graph, index: PermissionIndex, rng: random.Random
) -> list[tuple[UserInfo, dict[str, str]]]:
    """Requests aimed at what the bindings grant to whom (and near misses: other name, namespace, subresource),
    so that allowed answers are common and the edges of each rule are probed."""
    queries = []
    for binding in index.bindings:
        if binding.namespace not in ("", *graph.namespaces) or not binding.ref.name.startswith(("rb", "diff-")):
            continue
        for subject in binding.subjects:
            key = (subject.kind, subject.namespace, subject.name)
            holders = [i for i in graph.identities if key in i.subject_keys()]
            for rule in binding.rules:
                if not rule.resources or not holders:
                    continue
                verb, group, resource, subresource, name = _concrete(rule, rng)
                namespace = binding.namespace or rng.choice(graph.namespaces)
                other_namespace = next(n for n in graph.namespaces if n != namespace)
                variants = [
                    (namespace, resource, subresource, name),
                    (namespace, resource, subresource, "other"),
                    (other_namespace, resource, subresource, name),
                    ("", resource, subresource, name),
                    (namespace, resource, "" if subresource else "scale", name),
                ]
                for variant in variants:
                    ns, res, sub, obj_name = variant
                    attributes = {"namespace": ns, "verb": verb, "group": group, "resource": res,
                                  "subresource": sub, "name": obj_name}  # fmt: skip
                    queries.append((rng.choice(holders), attributes))
    rng.shuffle(queries)
    return queries[:150]
