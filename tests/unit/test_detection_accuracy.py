"""Issue 14: built-in ClusterRoles offline, pod-template control, secrets write/delete, latent roles and
attack paths (the rule fixtures themselves are in test_rules_rbac.py / test_rules_hygiene.py)."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.cli.main import main
from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.engine.ground.context import AuditContext
from access_hygiene.engine.ground.snapshot import ClusterSnapshot
from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_cluster_roles, kubernetes_version
from access_hygiene.engine.rbac.capabilities import rule_grants, service_account_capabilities
from access_hygiene.engine.rbac.permissions import PermissionIndex, PolicyRule
from access_hygiene.models.findings import Subject
from tests.pinned_clock import PINNED_NOW
from tests.unit.rule_fixtures import load

pytestmark = pytest.mark.unit


def context() -> AuditContext:
    """A fresh context per audit: its cache holds views of one snapshot."""
    return AuditContext(now=PINNED_NOW)


FIXTURES = Path(__file__).parent / "fixtures"
RBAC = "rbac.authorization.k8s.io"


def binding(name: str, role: str, user: str, namespace: str = "team", kind: str = "ClusterRole") -> dict[str, Any]:
    return {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC, "kind": kind, "name": role},
        "subjects": [{"kind": "User", "name": user, "apiGroup": RBAC}],
    }


def rule_ids(objects: list[dict[str, Any]], subject: str) -> set[str]:
    findings = run_audit(ClusterSnapshot.from_objects(objects), context())
    return {f.rule_id for f in findings if str(f.subject) == subject}


# --- defect 1: built-in ClusterRoles offline ---------------------------------------------------------


def test_shipped_bootstrap_roles_are_v1_36_with_aggregation() -> None:
    assert kubernetes_version().startswith("v1.36.")
    roles = {r["metadata"]["name"]: r for r in bootstrap_cluster_roles()}
    assert {"cluster-admin", "admin", "edit", "view", "system:aggregate-to-edit", "system:discovery"} <= set(roles)
    for name in ("admin", "edit", "view"):
        assert roles[name]["aggregationRule"]["clusterRoleSelectors"], name
    assert all(r["metadata"]["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults" for r in roles.values())


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("edit", {"AH-RBAC-009", "AH-RBAC-013", "AH-RBAC-015", "AH-RBAC-025", "AH-RBAC-026", "AH-RBAC-027"}),
        ("admin", {"AH-RBAC-009", "AH-RBAC-013", "AH-RBAC-015", "AH-RBAC-025", "AH-RBAC-028", "AH-RBAC-029"}),
    ],
)
def test_binding_to_builtin_role_is_resolved_offline(role: str, expected: set[str]) -> None:
    """Regression: `scan -f` of a RoleBinding to admin/edit printed "No findings"."""
    assert expected <= rule_ids([binding("b", role, "alice")], "User:alice")


def test_view_is_resolved_offline_and_aggregates_manifest_roles() -> None:
    index = PermissionIndex.build(ClusterSnapshot.from_objects([binding("b", "view", "carol")]))
    carol = Subject(kind="User", name="carol")
    assert index.allows(carol, "list", "pods", "team")
    assert not index.allows(carol, "get", "secrets", "team")
    # A ClusterRole in the manifests labelled aggregate-to-view joins view (and, through the chain, edit/admin).
    widget_reader = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "widget-secrets", "labels": {f"{RBAC}/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    objects = [binding("b", "view", "carol"), binding("a", "admin", "dave"), widget_reader]
    index = PermissionIndex.build(ClusterSnapshot.from_objects(objects))
    assert index.allows(carol, "get", "secrets", "team")
    assert index.allows(Subject(kind="User", name="dave"), "get", "secrets", "team")
    assert "AH-RBAC-009" in rule_ids(objects, "User:carol")


def test_builtin_role_in_the_snapshot_wins() -> None:
    tame_edit = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "edit"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }
    assert rule_ids([binding("b", "edit", "alice"), tame_edit], "User:alice") == set()


def test_binding_to_builtin_role_is_not_a_missing_role() -> None:
    objects = [binding("b", "edit", "alice"), binding("c", "system:aggregate-to-view", "bob")]
    findings = run_audit(ClusterSnapshot.from_objects(objects), context(), only=["AH-RBAC-022"])
    assert findings == []


def test_cli_scan_of_edit_binding_reports_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(yaml.safe_dump(binding("alice-edit", "edit", "alice")))
    assert main(["scan", "-f", str(path), "--fail-on", "high"]) == 1
    assert "No findings" not in capsys.readouterr().out


# --- item 5: pod-template control is pod creation ----------------------------------------------------


@pytest.mark.parametrize("verb", ["create", "update", "patch"])
@pytest.mark.parametrize(
    ("group", "resource"),
    [("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
     ("batch", "jobs"), ("batch", "cronjobs"), ("", "replicationcontrollers")],
)  # fmt: skip
def test_pod_template_control_counts_as_pod_creation(verb: str, group: str, resource: str) -> None:
    role = {
        "apiVersion": f"{RBAC}/v1",
        "kind": "Role",
        "metadata": {"name": "r", "namespace": "team"},
        "rules": [{"apiGroups": [group], "resources": [resource], "verbs": [verb]}],
    }
    sa_binding = binding("b", "r", "x", kind="Role")
    sa_binding["subjects"] = [{"kind": "ServiceAccount", "name": "deployer", "namespace": "team"}]
    snapshot = ClusterSnapshot.from_objects([role, sa_binding])
    findings = run_audit(snapshot, context(), only=["AH-RBAC-015"])
    assert [f.object.name for f in findings] == ["b"]
    assert "pod-template control" in findings[0].message
    capabilities = service_account_capabilities(snapshot, context())
    assert [(c.service_account, c.capability) for c in capabilities] == [("deployer", "create-pods")]


def test_scale_subresource_is_not_pod_template_control() -> None:
    rule = PolicyRule.parse({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]})
    from access_hygiene.engine.rbac.capabilities import CREATE_WORKLOADS

    assert not rule_grants(rule, CREATE_WORKLOADS)


# --- rule_grants: the factorised test equals the (verb, group, resource) product --------------------


def test_rule_grants_equals_the_product_definition() -> None:
    from itertools import product

    from access_hygiene.engine.rbac import capabilities

    patterns = [getattr(capabilities, name) for name in dir(capabilities) if name.isupper()]
    patterns = [p for p in patterns if isinstance(p, tuple) and len(p) == 3 and isinstance(p[0], tuple)]
    values = {
        "verbs": [["*"], ["get"], ["create", "patch"], ["escalate", "bind"], ["impersonate"], ["delete"]],
        "apiGroups": [["*"], [""], ["apps"], ["rbac.authorization.k8s.io"], ["certificates.k8s.io", "batch"]],
        "resources": [["*"], ["pods"], ["pods/exec"], ["*/exec"], ["secrets", "roles"], ["deployments"],
                      ["nodes/proxy"], ["signers"], ["users", "serviceaccounts/token"]],
    }  # fmt: skip
    checked = 0
    for verbs, groups, resources in product(values["verbs"], values["apiGroups"], values["resources"]):
        rule = PolicyRule.parse({"verbs": verbs, "apiGroups": groups, "resources": resources})
        for pattern in patterns:
            expected = any(
                rule.allows_any_name(v, g, *r.partition("/")[::2])
                for v, g, r in product(pattern[0], pattern[1], pattern[2])
            )
            assert rule_grants(rule, pattern) == expected, (rule, pattern)
            checked += 1
    assert checked > 1000


# --- item 4 and attack paths -------------------------------------------------------------------------


def test_latent_role_becomes_effective_once_bound() -> None:
    snapshot = load(FIXTURES / "rbac" / "AH-RBAC-024" / "bad.yaml")
    latent = {f.object.name for f in run_audit(snapshot, context(), only=["AH-RBAC-024"])}
    assert "chart-secrets-reader" in latent
    snapshot.role_bindings.append(binding("reader", "chart-secrets-reader", "alice"))
    findings = run_audit(snapshot, context(), only=["AH-RBAC-024", "AH-RBAC-009"])
    assert "chart-secrets-reader" not in {f.object.name for f in findings if f.rule_id == "AH-RBAC-024"}
    assert [(f.rule_id, f.severity.value) for f in findings if f.object.name == "reader"] == [("AH-RBAC-009", "high")]


def test_attack_path_names_the_whole_path_and_sorts_first() -> None:
    findings = run_audit(load(FIXTURES / "hygiene" / "AH-SA-011" / "bad.yaml"), context())
    paths = [f for f in findings if f.rule_id == "AH-SA-011"]
    assert findings[: len(paths)] == paths
    assert any(f.rule_id == "AH-RBAC-001" for f in findings)  # other critical findings come after
    messages = {f.object.name: f.message for f in paths}
    assert messages["ops-console"] == (
        "Deployment ops-console -> ServiceAccount ops -> ClusterRoleBinding ops-admin (ClusterRole/cluster-admin) "
        "-> cluster-admin (*/*/*)"
    )
    # The path names what the role grants (issue 25 item 7): `patch deployments`, not "create pods".
    assert messages["migrate"].endswith("RoleBinding ci-deploys-system (ClusterRole/deployer) -> patch deployments "
                                        "(pod-template control: runs pods) in namespace kube-system")  # fmt: skip
    assert "(as Group system:serviceaccounts:data)" in messages["db"]
    assert messages["db"].endswith("-> impersonate users cluster-wide")


def test_token_rules_speak_carefully_on_a_manifest_set_without_bindings() -> None:
    """AH-SA-002/007 used to stay silent when an app's manifests hold no bindings at all."""
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "api", "namespace": "shop"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"template": {"spec": {"serviceAccountName": "api", "containers": [{"name": "a", "image": "a"}]}}},
        },
    ]
    findings = run_audit(ClusterSnapshot.from_objects(objects), context(), only=["AH-SA-002", "AH-SA-007"])
    assert [(f.rule_id, f.object.kind, f.severity.value) for f in findings] == [
        ("AH-SA-002", "Deployment", "low"),
        ("AH-SA-007", "ServiceAccount", "low"),
    ]
    assert all("no binding in the scanned objects" in f.message for f in findings)
