"""The chart installed with `helm install` into the real control plane; its ServiceAccount's real permissions.

Permissions are asked of the API server as the chart's ServiceAccount itself (a TokenRequest token,
SelfSubjectAccessReview), so what is checked is what RBAC really grants, grant ceiling included.
"""

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner
from scripts.render_chart import CHART, find_helm

from tests.audit_log import audit_log_events
from tests.cluster.conftest import OPERATOR_ENV, wait_for
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster
RELEASE = "ah-chart"
CRD_NAME = "accesspolicies.accesshygiene.io"
# Its own ceiling name, so this release does not collide with the operator fixture's ceiling.
CEILING = f"{RELEASE}-grant-ceiling"
# (verb, group, resource, subresource, namespace); "" namespace means cluster-wide.
Access = tuple[str, str, str, str, str]
OPERATOR_NEEDS: list[Access] = [
    ("watch", "", "namespaces", "", ""),
    ("patch", "", "namespaces", "", ""),
    ("list", "", "pods", "", ""),
    ("list", "", "serviceaccounts", "", ""),
    ("create", "", "serviceaccounts", "", "shop"),
    ("patch", "", "serviceaccounts", "", "shop"),
    ("delete", "", "serviceaccounts", "", "shop"),
    ("list", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("watch", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""),
    ("get", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("create", "rbac.authorization.k8s.io", "roles", "", "shop"),
    ("patch", "rbac.authorization.k8s.io", "rolebindings", "", "shop"),
    ("delete", "rbac.authorization.k8s.io", "rolebindings", "", "shop"),
    ("create", "networking.k8s.io", "networkpolicies", "", "shop"),
    ("patch", "networking.k8s.io", "networkpolicies", "", "shop"),
    ("delete", "networking.k8s.io", "networkpolicies", "", "shop"),
    ("list", "discovery.k8s.io", "endpointslices", "", "default"),
    ("list", "apps", "replicasets", "", ""),
    ("watch", "apps", "daemonsets", "", ""),
    ("list", "batch", "cronjobs", "", ""),
    ("watch", "accesshygiene.io", "accesspolicies", "", ""),
    ("patch", "accesshygiene.io", "accesspolicies", "", "shop"),
    ("patch", "accesshygiene.io", "accesspolicies", "status", "shop"),
    ("list", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
    # Just-in-time access: watch the kinds, write request status (grants: the rolebindings rule above).
    ("watch", "accesshygiene.io", "accesseligibilities", "", ""),
    ("watch", "accesshygiene.io", "accessrequests", "", ""),
    ("watch", "accesshygiene.io", "accessapprovals", "", ""),
    ("patch", "accesshygiene.io", "accessrequests", "status", "shop"),
    ("create", "", "events", "", "shop"),
    ("create", "events.k8s.io", "events", "", "shop"),
    # reports.enabled (default): findings as OpenReports objects.
    ("list", "openreports.io", "reports", "", ""),
    ("create", "openreports.io", "reports", "", "shop"),
    ("patch", "openreports.io", "reports", "", "shop"),
    ("delete", "openreports.io", "reports", "", "shop"),
    ("create", "openreports.io", "clusterreports", "", ""),
    ("patch", "openreports.io", "clusterreports", "", ""),
    # From the grant ceiling, held so that Roles up to it pass the escalation check.
    ("get", "", "configmaps", "", "shop"),
    ("list", "", "services", "", "shop"),
]
OPERATOR_MUST_NOT: list[Access] = [
    ("get", "", "secrets", "", "shop"),
    ("list", "", "secrets", "", ""),
    ("watch", "", "secrets", "", "shop"),
    ("*", "rbac.authorization.k8s.io", "*", "", ""),
    ("create", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""),
    ("escalate", "rbac.authorization.k8s.io", "roles", "", "shop"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("bind", "rbac.authorization.k8s.io", "roles", "", "shop"),
    ("impersonate", "", "users", "", ""),
    ("impersonate", "", "serviceaccounts", "", "shop"),
    ("impersonate", "", "groups", "", ""),
    ("create", "", "pods", "exec", "shop"),
    ("get", "", "nodes", "proxy", ""),
    ("list", "", "nodes", "", ""),
    ("create", "", "pods", "", "shop"),
    ("delete", "", "pods", "", "shop"),
    ("create", "", "serviceaccounts", "token", "shop"),
    ("create", "", "namespaces", "", ""),
    ("delete", "", "namespaces", "", ""),
    ("update", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
    ("delete", "apiextensions.k8s.io", "customresourcedefinitions", "", ""),
    ("create", "accesshygiene.io", "accesspolicies", "", "shop"),
    ("delete", "accesshygiene.io", "accesspolicies", "", "shop"),
    ("create", "accesshygiene.io", "accessrequests", "", "shop"),
    ("create", "accesshygiene.io", "accessapprovals", "", "shop"),
    ("update", "accesshygiene.io", "accessapprovals", "", "shop"),
    ("create", "accesshygiene.io", "accesseligibilities", "", ""),
    ("delete", "accesshygiene.io", "accessrequests", "", "shop"),
    # The JIT admission policies come with the chart; the operator writes none while admission is off.
    ("create", "admissionregistration.k8s.io", "validatingadmissionpolicies", "", ""),
    ("create", "apps", "deployments", "", "shop"),
    ("create", "certificates.k8s.io", "certificatesigningrequests", "", ""),
    ("update", "openreports.io", "reports", "", "shop"),
    ("deletecollection", "openreports.io", "reports", "", "shop"),
]


@dataclass
class Release:
    cluster: Cluster
    namespace: str
    helm: Path

    @property
    def service_account(self) -> str:
        return f"{RELEASE}-access-hygiene"

    def run(self, *args: str) -> str:
        command = [str(self.helm), *args, "--kubeconfig", str(self.cluster.kubeconfig), "--namespace", self.namespace]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
        assert result.returncode == 0, f"{' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def install_or_upgrade(self, *values: str) -> str:
        return self.run("upgrade", "--install", RELEASE, str(CHART), "--reset-values",
                        "--set", f"grantCeiling.name={CEILING}", *values)  # fmt: skip


def mint_service_account_kubeconfig(
    cluster: Cluster, namespace: str, name: str, path: Path, expiration_seconds: int = 3600
) -> Path:
    """A kubeconfig authenticating as ServiceAccount namespace/name with a TokenRequest token.

    The same file serves as KUBECONFIG for an operator run out of cluster as that account.
    """
    with cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        token_request = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": expiration_seconds}}
        )
    token = token_request.status.token
    path.write_text(cluster.control_plane.render_kubeconfig(token, f"system:serviceaccount:{namespace}:{name}"))
    return path


def allowed_as(api: kubernetes.client.ApiClient, access: Access) -> bool:
    verb, group, resource, subresource, namespace = access
    attributes = {"verb": verb, "group": group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if namespace:
        attributes["namespace"] = namespace
    authorization: Any = kubernetes.client.AuthorizationV1Api(api)
    review = authorization.create_self_subject_access_review({"spec": {"resourceAttributes": attributes}})
    return bool(review.status.allowed)


def adopt_existing_crd(cluster: Cluster, namespace: str) -> None:
    """Other cluster tests apply the CRD directly; mark it as this release's so Helm adopts it."""
    with cluster.api_client() as api:
        extensions = kubernetes.client.ApiextensionsV1Api(api)
        try:
            extensions.read_custom_resource_definition(CRD_NAME)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return
            raise
        metadata = {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": namespace},
        }
        extensions.patch_custom_resource_definition(CRD_NAME, {"metadata": metadata})


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    namespace = f"ah-chart-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        # Pod Security admission enforces "restricted" here: the operator pod must be admitted anyway.
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        core.create_namespace({"metadata": {"name": namespace, "labels": labels}})
    adopt_existing_crd(cluster, namespace)
    installed = Release(cluster, namespace, find_helm())
    notes = installed.install_or_upgrade()
    assert f"installed in namespace {namespace}" in notes
    yield installed
    subprocess.run([str(installed.helm), "uninstall", RELEASE, "--kubeconfig", str(cluster.kubeconfig),
                    "--namespace", namespace], capture_output=True, check=False, timeout=120)  # fmt: skip
    with cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).delete_namespace(namespace)


@pytest.fixture(scope="module")
def as_operator(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubernetes.client.ApiClient]:
    path = mint_service_account_kubeconfig(
        release.cluster, release.namespace, release.service_account, tmp_path_factory.mktemp("sa") / "kubeconfig"
    )
    with kubernetes.config.new_client_from_config(config_file=str(path)) as api:
        yield api


def test_chart_objects_are_in_place(release: Release) -> None:
    with release.cluster.api_client() as api:
        extensions: Any = kubernetes.client.ApiextensionsV1Api(api)
        crd = extensions.read_custom_resource_definition(CRD_NAME)
        established = [c for c in crd.status.conditions or [] if c.type == "Established"]
        assert [c.status for c in established] == ["True"]
        assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        for name in (f"{RELEASE}-access-hygiene", CEILING):
            assert rbac.read_cluster_role(name).rules
        for name in (f"{RELEASE}-access-hygiene", f"{RELEASE}-access-hygiene-grant-ceiling"):
            subjects = rbac.read_cluster_role_binding(name).subjects
            assert [(s.kind, s.name, s.namespace) for s in subjects] == [
                ("ServiceAccount", release.service_account, release.namespace)
            ]
        core: Any = kubernetes.client.CoreV1Api(api)
        account = core.read_namespaced_service_account(release.service_account, release.namespace)
        assert account.automount_service_account_token is False
        apps: Any = kubernetes.client.AppsV1Api(api)
        deployment = apps.read_namespaced_deployment(f"{RELEASE}-access-hygiene", release.namespace)
        assert deployment.spec.template.spec.service_account_name == release.service_account
        service = core.read_namespaced_service(f"{RELEASE}-access-hygiene-metrics", release.namespace)
        assert [port.port for port in service.spec.ports] == [9808]


def test_operator_pod_is_admitted_under_restricted_pod_security(release: Release) -> None:
    """The ReplicaSet controller creates the pod; PodSecurity admission would refuse a non-restricted one."""
    with release.cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        selector = "app.kubernetes.io/instance=" + RELEASE

        def operator_pods() -> list[Any]:
            return list(core.list_namespaced_pod(release.namespace, label_selector=selector).items)

        pods = wait_for(lambda: len(operator_pods()) == 2 and operator_pods())  # replicaCount 2 (docs/ha.md)
        for pod in pods:
            assert pod.spec.security_context.run_as_non_root is True
            assert pod.spec.service_account_name == release.service_account


def test_token_authenticates_as_the_chart_service_account(release: Release, as_operator: Any) -> None:
    authentication: Any = kubernetes.client.AuthenticationV1Api(as_operator)
    review = authentication.create_self_subject_review({})
    assert review.status.user_info.username == f"system:serviceaccount:{release.namespace}:{release.service_account}"


@pytest.mark.parametrize("access", OPERATOR_NEEDS, ids=lambda a: "-".join(p for p in a if p))
def test_service_account_may_do_what_the_operator_needs(as_operator: Any, access: Access) -> None:
    assert allowed_as(as_operator, access)


@pytest.mark.parametrize("access", OPERATOR_MUST_NOT, ids=lambda a: "-".join(p for p in a if p).replace("*", "all"))
def test_service_account_is_denied_what_the_operator_must_not_do(as_operator: Any, access: Access) -> None:
    assert not allowed_as(as_operator, access)


def role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": rules}


def binding(name: str, kind: str, role_name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": namespace}],
    }


@pytest.mark.parametrize(
    ("kind", "name", "payload", "allowed"),
    [
        ("Role", "within-ceiling", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}], True),
        ("Role", "secrets-reader", [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}], False),
        ("Role", "pod-deleter", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}], False),
        ("Role", "wildcard", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], False),
        ("RoleBinding", "to-ceiling", ("ClusterRole", CEILING), True),
        ("RoleBinding", "to-admin", ("ClusterRole", "cluster-admin"), False),
        ("RoleBinding", "to-edit", ("ClusterRole", "edit"), False),
    ],
)  # fmt: skip
def test_kubernetes_escalation_check_enforces_the_grant_ceiling(
    release: Release, as_operator: Any, kind: str, name: str, payload: Any, allowed: bool
) -> None:
    """Server-side dry runs as the operator: RBAC up to the ceiling is accepted, anything above is refused."""
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(as_operator)
    if kind == "Role":
        body, create = role(name, payload), rbac.create_namespaced_role
    else:
        body, create = binding(name, payload[0], payload[1], release.namespace), rbac.create_namespaced_role_binding
    if allowed:
        create(release.namespace, body, dry_run="All")
        return
    with pytest.raises(kubernetes.client.ApiException) as refused:
        create(release.namespace, body, dry_run="All")
    assert refused.value.status == 403, refused.value.body
    assert "attempting to grant RBAC permissions not currently held" in str(refused.value.body)


def test_toggles_widen_exactly_what_they_document(release: Release, as_operator: Any) -> None:
    secret_list: Access = ("list", "", "secrets", "", "")
    secret_get: Access = ("get", "", "secrets", "", "shop")
    cluster_role_create: Access = ("create", "rbac.authorization.k8s.io", "clusterroles", "", "")
    release.install_or_upgrade("--set", "secretMetadata.enabled=true", "--set", "rbac.clusterRules.enabled=true")
    try:
        wait_for(lambda: allowed_as(as_operator, secret_list) and allowed_as(as_operator, cluster_role_create))
        assert not allowed_as(as_operator, secret_get)
        assert not allowed_as(as_operator, ("bind", "rbac.authorization.k8s.io", "clusterroles", "", ""))
        assert not allowed_as(as_operator, ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", ""))
    finally:
        release.install_or_upgrade()
    wait_for(lambda: not allowed_as(as_operator, secret_list) and not allowed_as(as_operator, cluster_role_create))


GROUP, VERSION, PLURAL = "accesshygiene.io", "v1alpha1", "accesspolicies"
POLICY_LABEL = "accesshygiene.io/policy"
ORDERS_API = {
    "mode": "enforce",
    "rbac": {
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ]
    },
    "network": {"ingress": [{"from": [{"app": "web"}], "ports": [{"port": 8080}]}], "kubeAPIServer": True},
}


def audit_events_of(cluster: Cluster, username: str, since: float) -> list[dict[str, Any]]:
    """The API server's audit events for one user after `since` (unix time)."""
    events = []
    for event in audit_log_events(cluster.control_plane.audit_log_path):
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != username:
            continue
        stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if stamp.timestamp() >= since:
            events.append(event)
    return events


def ready_reason(custom: Any, namespace: str, name: str) -> str | None:
    policy = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = policy.get("status") or {}
    if status.get("observedGeneration") != policy["metadata"]["generation"]:
        return None
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return f"{ready['status']}/{ready['reason']}" if ready else None


def forbidden_requests(events: list[dict[str, Any]]) -> list[str]:
    """Requests RBAC refused. A 403 the authorizer allowed came from admission (an Event posted into a namespace
    that the test is deleting at that moment, "being terminated"): not a missing permission of the chart."""
    return [
        f"{e['verb']} {e.get('objectRef', {}).get('resource')} {e.get('objectRef', {}).get('namespace', '')}".strip()
        for e in events
        if (e.get("responseStatus") or {}).get("code") == 403
        and (e.get("annotations") or {}).get("authorization.k8s.io/decision") != "allow"
    ]


def test_audit_log_shows_forbidden_requests_of_the_chart_account(release: Release, as_operator: Any) -> None:
    """The no-403 check below reads the audit log; it must see a refused request when there is one."""
    started = time.time() - 1
    core: Any = kubernetes.client.CoreV1Api(as_operator)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.list_namespaced_secret(release.namespace)
    assert refused.value.status == 403
    username = f"system:serviceaccount:{release.namespace}:{release.service_account}"

    def refused_requests() -> list[str]:
        return forbidden_requests(audit_events_of(release.cluster, username, started))

    wait_for(lambda: f"list secrets {release.namespace}" in refused_requests())


@dataclass
class ChartOperator:
    runner: KopfRunner
    started: float  # unix time just before it started: its requests are the audit events after this


@pytest.fixture
def operator_as_chart_account(
    release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ChartOperator]:
    """The operator out of cluster, authenticated only as the chart's ServiceAccount."""
    started = time.time()
    kubeconfig = mint_service_account_kubeconfig(
        release.cluster, release.namespace, release.service_account, tmp_path / "kubeconfig"
    )
    env = {
        **OPERATOR_ENV,
        "ACCESS_HYGIENE_OPERATOR_NAMESPACE": release.namespace,
        "ACCESS_HYGIENE_GRANT_CEILING_CLUSTER_ROLE": CEILING,
        "KUBECONFIG": str(kubeconfig),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "access_hygiene.handlers"], timeout=60) as runner:
        yield ChartOperator(runner, started)
    assert runner.exit_code == 0, runner.output
    assert not runner.exception, runner.output


@pytest.mark.slow
def test_operator_runs_as_the_chart_account_without_forbidden_requests(
    release: Release, operator_as_chart_account: ChartOperator
) -> None:
    """A full scenario with the chart's RBAC only: no request of the operator is refused (403)."""
    started = operator_as_chart_account.started
    username = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    namespace = f"ah-scenario-{uuid.uuid4().hex[:8]}"
    with release.cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        custom: Any = kubernetes.client.CustomObjectsApi(api)
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        networking: Any = kubernetes.client.NetworkingV1Api(api)
        core.create_namespace({"metadata": {"name": namespace, "labels": {"accesshygiene.io/mode": "enforce"}}})
        try:
            # Namespace hygiene: default ServiceAccount automount off, default deny, summary annotation.
            def default_account_automount() -> bool | None:
                try:
                    account = core.read_namespaced_service_account("default", namespace)
                except kubernetes.client.ApiException as error:
                    if error.status == 404:  # kube-controller-manager has not created it yet
                        return None
                    raise
                return account.automount_service_account_token  # type: ignore[no-any-return]

            def annotations() -> dict[str, str]:
                return dict(core.read_namespace(namespace).metadata.annotations or {})

            wait_for(lambda: default_account_automount() is False)
            wait_for(lambda: networking.list_namespaced_network_policy(namespace).items)
            wait_for(lambda: "accesshygiene.io/hygiene-summary" in annotations())

            # AccessPolicy create: ServiceAccount, Role, RoleBinding, NetworkPolicies.
            policy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessPolicy",
                      "metadata": {"name": "orders-api"}, "spec": ORDERS_API}  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, policy)
            wait_for(lambda: ready_reason(custom, namespace, "orders-api") == "True/Reconciled")
            selector = f"{POLICY_LABEL}=orders-api"
            assert core.read_namespaced_service_account("orders-api", namespace)
            assert rbac.list_namespaced_role(namespace, label_selector=selector).items
            assert rbac.list_namespaced_role_binding(namespace, label_selector=selector).items
            assert networking.list_namespaced_network_policy(namespace, label_selector=selector).items

            # Update: narrower rules, no network section: the policy's NetworkPolicies are pruned.
            narrowed = {"mode": "enforce", "rbac": {"rules": ORDERS_API["rbac"]["rules"][:1]}}  # type: ignore[index]
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "orders-api",
                                                  [{"op": "replace", "path": "/spec", "value": narrowed}],
                                                  _content_type="application/json-patch+json")  # fmt: skip
            wait_for(lambda: ready_reason(custom, namespace, "orders-api") == "True/Reconciled")
            wait_for(lambda: not networking.list_namespaced_network_policy(namespace, label_selector=selector).items)

            # Above the ceiling: refused by the operator, nothing written.
            greedy = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessPolicy", "metadata": {"name": "greedy"},
                      "spec": {"mode": "enforce", "rbac": {"rules": [
                          {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}}}  # fmt: skip
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, greedy)
            wait_for(lambda: ready_reason(custom, namespace, "greedy") == "False/GrantCeilingExceeded")

            # Delete: everything the policy generated goes.
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "orders-api")
            wait_for(lambda: not rbac.list_namespaced_role(namespace, label_selector=selector).items)
            wait_for(lambda: not rbac.list_namespaced_role_binding(namespace, label_selector=selector).items)

            def account_names() -> list[str]:
                return [sa.metadata.name for sa in core.list_namespaced_service_account(namespace).items]

            wait_for(lambda: "orders-api" not in account_names())
        finally:
            core.delete_namespace(namespace)

    events = audit_events_of(release.cluster, username, started)
    verbs = {event["verb"] for event in events}
    # Watches complete only when they end, so they are not among these events.
    assert {"get", "list", "patch", "delete"} <= verbs, "the operator did not run as the chart's account"
    # The watch cache's initial LISTs (every kind, cluster-wide) ran under the same identity.
    scanned = {e["objectRef"]["resource"] for e in events if e["verb"] == "list" and "namespace" not in e["objectRef"]}
    assert {"cronjobs", "clusterrolebindings", "pods"} <= scanned, "the watch cache did not list as the chart's account"
    assert forbidden_requests(events) == [], "the chart's RBAC is missing what these requests need"


def _dry_run_install(release: Release, name: str, *values: str) -> subprocess.CompletedProcess[str]:
    """`helm install --dry-run=server` of another release: rendered with lookups against the cluster, nothing
    installed."""
    command = [str(release.helm), "install", name, str(CHART), "--dry-run=server", "--kubeconfig",
               str(release.cluster.kubeconfig), "--namespace", release.namespace, *values]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize("same_rules", [True, False], ids=["same-rules", "other-rules"])
def test_a_grant_ceiling_installed_otherwise_is_used_only_with_the_values_rules(
    release: Release, same_rules: bool
) -> None:
    """What `access-hygiene local` or `kubectl apply -f deploy/` installed (no Helm ownership): with the values'
    rules the chart binds the operator to it and leaves it; with others it fails and says why."""
    from access_hygiene.render.grant_ceiling import DEFAULT_GRANT_CEILING_RULES, render_grant_ceiling_role

    name = f"ah-foreign-ceiling-{uuid.uuid4().hex[:6]}"
    rules = (
        DEFAULT_GRANT_CEILING_RULES if same_rules else [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    )
    with release.cluster.api_client() as api:
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(render_grant_ceiling_role(name, rules))
        try:
            result = _dry_run_install(release, "ah-second", "--set", f"grantCeiling.name={name}")
        finally:
            rbac.delete_cluster_role(name)
    if same_rules:
        assert result.returncode == 0, result.stderr
        manifest = result.stdout.split("\nNOTES:\n")[0]
        assert f"kind: ClusterRole\nmetadata:\n  name: {name}\n" not in manifest  # not rendered: left as it is
        assert f"  name: {name}\n" in manifest  # but bound: the binding's roleRef
        assert "It was already in the cluster with the same rules" in result.stdout
        # The AccessPolicy CRD belongs to the module's release (adopt_existing_crd): this one leaves it too.
        assert "The AccessPolicy CRD was already in the cluster" in result.stdout
    else:
        assert result.returncode != 0
        assert f"ClusterRole {name} already exists, not installed by Helm" in result.stderr
        assert "set grantCeiling.create=false to use it as it is" in result.stderr


def test_a_grant_ceiling_of_another_release_is_refused_by_name(release: Release) -> None:
    result = _dry_run_install(release, "ah-second", "--set", f"grantCeiling.name={CEILING}")
    assert result.returncode != 0
    assert f"ClusterRole {CEILING} belongs to Helm release {RELEASE} in namespace {release.namespace}" in result.stderr


def test_uninstall_keeps_the_crd_and_removes_the_rbac(release: Release) -> None:
    release.run("uninstall", RELEASE, "--wait")
    with release.cluster.api_client() as api:
        extensions: Any = kubernetes.client.ApiextensionsV1Api(api)
        assert extensions.read_custom_resource_definition(CRD_NAME).metadata.name == CRD_NAME
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        with pytest.raises(kubernetes.client.ApiException) as gone:
            rbac.read_cluster_role(f"{RELEASE}-access-hygiene")
        assert gone.value.status == 404
