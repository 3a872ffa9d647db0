"""The AccessPolicy reconciler against the real control plane, with the operator running (KopfRunner)."""

import time
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.cluster.conftest import operator_writes, wait_for, wait_for_authorizer
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "accesshygiene.io", "v1alpha1", "accesspolicies"


def make_policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AccessPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_policy(api: kubernetes.client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, make_policy(name, spec)
    )


def get_policy(api: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return result


def condition(policy: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (policy.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def wait_condition(
    api: kubernetes.client.ApiClient, namespace: str, name: str, status: str, reason: str
) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        policy = get_policy(api, namespace, name)
        ready = condition(policy, "Ready")
        generation = policy["metadata"]["generation"]
        current = (policy.get("status") or {}).get("observedGeneration") == generation
        if current and ready and ready["status"] == status and ready["reason"] == reason:
            return policy
        return None

    result: dict[str, Any] = wait_for(matches, timeout=30)
    return result


def can(
    api: kubernetes.client.ApiClient,
    namespace: str,
    sa: str,
    verb: str,
    resource: str,
    name: str = "",
    group: str = "",
) -> bool:
    attributes = {"verb": verb, "resource": resource, "namespace": namespace, "group": group}
    if "/" in resource:
        attributes["resource"], attributes["subresource"] = resource.split("/", 1)
    if name:
        attributes["name"] = name
    review = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": f"system:serviceaccount:{namespace}:{sa}",
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{namespace}",
                    "system:authenticated",
                ],
                "resourceAttributes": attributes,
            },
        }
    )
    return bool(review.status.allowed)


API_READER = {
    "mode": "enforce",
    "rbac": {
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["orders-config"],
                "verbs": ["get"],
            },
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ]
    },
    "network": {"ingress": [{"from": [{"app": "web"}], "ports": [{"port": 8080}]}], "dns": True},
}


def test_enforce_grants_exactly_the_declared_verbs(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        wait_for_authorizer(api)  # the generated Role and RoleBinding are in the store, not yet in its cache
        core = kubernetes.client.CoreV1Api(api)
        sa = core.read_namespaced_service_account("orders-api", namespace)
        assert sa.automount_service_account_token is True  # rbac declared => the app needs its token
        assert sa.metadata.owner_references[0].kind == "AccessPolicy"
        policies = kubernetes.client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
        assert policies, "a NetworkPolicy is generated for the app's pods"

        allowed = [
            ("get", "configmaps", "orders-config"),
            ("get", "pods", ""),
            ("list", "pods", ""),
            ("watch", "pods", ""),
        ]
        denied = [
            ("get", "configmaps", "other-config"),
            ("list", "configmaps", ""),
            ("delete", "pods", ""),
            ("create", "pods", ""),
            ("get", "secrets", ""),
            ("list", "secrets", ""),
            ("create", "pods/exec", ""),
            ("update", "configmaps", "orders-config"),
        ]
        for verb, resource, name in allowed:
            assert can(api, namespace, "orders-api", verb, resource, name), (verb, resource, name)
        for verb, resource, name in denied:
            assert not can(api, namespace, "orders-api", verb, resource, name), (verb, resource, name)
        # Another SA in the namespace (e.g. default) gets nothing from the policy.
        assert not can(api, namespace, "default", "list", "pods")


def test_update_narrows_and_prunes(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        wait_for_authorizer(api)
        assert can(api, namespace, "orders-api", "list", "pods")
        narrowed = {**API_READER, "rbac": {"rules": [API_READER["rbac"]["rules"][0]]}}  # type: ignore[index]
        narrowed.pop("network")
        # A JSON patch of the spec alone: the operator writes status concurrently, so no resourceVersion.
        kubernetes.client.CustomObjectsApi(api).patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "orders-api",
            [{"op": "replace", "path": "/spec", "value": narrowed}],
            _content_type="application/json-patch+json",
        )
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        wait_for(lambda: not can(api, namespace, "orders-api", "list", "pods"))
        assert can(api, namespace, "orders-api", "get", "configmaps", "orders-config")
        networking = kubernetes.client.NetworkingV1Api(api)
        wait_for(lambda: not networking.list_namespaced_network_policy(namespace).items)


def test_delete_cleans_up_generated_objects(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "orders-api"
        )
        core = kubernetes.client.CoreV1Api(api)
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        networking = kubernetes.client.NetworkingV1Api(api)
        wait_for(
            lambda: "orders-api" not in [s.metadata.name for s in core.list_namespaced_service_account(namespace).items]
        )
        wait_for(lambda: not rbac.list_namespaced_role(namespace).items)
        wait_for(lambda: not rbac.list_namespaced_role_binding(namespace).items)
        wait_for(lambda: not networking.list_namespaced_network_policy(namespace).items)


def test_audit_mode_plans_but_writes_nothing(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    started = time.time()
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", {**API_READER, "mode": "audit"})
        policy = wait_condition(api, namespace, "orders-api", "True", "AuditOnly")
        planned = {(c["action"], c["kind"]) for c in policy["status"]["plannedChanges"]}
        assert {("apply", "ServiceAccount"), ("apply", "Role"), ("apply", "RoleBinding")} <= planned
        names = [
            s.metadata.name for s in kubernetes.client.CoreV1Api(api).list_namespaced_service_account(namespace).items
        ]
        assert "orders-api" not in names
        assert not kubernetes.client.RbacAuthorizationV1Api(api).list_namespaced_role(namespace).items
    time.sleep(3)  # let the drift timer fire at least once
    # Allowed: the policy's own status/finalizer, namespace hygiene's summary annotation (its one audit-mode write)
    # and the namespace's policy report (findings are an output in both modes).
    writes = [
        w
        for w in operator_writes(cluster, started, namespace)
        if w.get("resource") != "accesspolicies"
        and not (w.get("resource") == "namespaces" and w["verb"] == "patch")
        and w.get("apiGroup") != "openreports.io"
    ]
    assert writes == []


def test_noop_reconcile_makes_zero_writes(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        time.sleep(3)  # settle: finalizer, status, first timer tick
        quiet_since = time.time() + 1
        time.sleep(7)  # several drift-timer ticks (interval 2s)
        assert operator_writes(cluster, quiet_since, namespace) == []


def test_drift_is_repaired(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        role = rbac.list_namespaced_role(namespace).items[0]
        rbac.delete_namespaced_role(role.metadata.name, namespace)
        core = kubernetes.client.CoreV1Api(api)
        core.patch_namespaced_service_account("orders-api", namespace, {"automountServiceAccountToken": False})
        wait_for(lambda: [r.metadata.name for r in rbac.list_namespaced_role(namespace).items] == [role.metadata.name])
        wait_for(lambda: core.read_namespaced_service_account("orders-api", namespace).automount_service_account_token)


def test_grant_ceiling_refusal_writes_nothing(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    spec = {
        "mode": "enforce",
        "rbac": {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]},
    }
    with cluster.api_client() as api:
        create_policy(api, namespace, "greedy", spec)
        policy = wait_condition(api, namespace, "greedy", "False", "GrantCeilingExceeded")
        assert "secrets" in condition(policy, "Ready")["message"]  # type: ignore[index]
        names = [
            s.metadata.name for s in kubernetes.client.CoreV1Api(api).list_namespaced_service_account(namespace).items
        ]
        assert "greedy" not in names
        assert not can(api, namespace, "greedy", "list", "secrets")


def test_existing_unowned_service_account_is_never_taken_over(
    operator: KopfRunner, cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespaced_service_account(
            namespace,
            {
                "metadata": {"name": "legacy", "labels": {"team": "payments"}},
                "automountServiceAccountToken": True,
            },
        )
        create_policy(api, namespace, "legacy", {"mode": "enforce"})
        policy = wait_condition(api, namespace, "legacy", "False", "NameConflict")
        assert "ServiceAccount legacy" in condition(policy, "Ready")["message"]  # type: ignore[index]
        sa = core.read_namespaced_service_account("legacy", namespace)
        assert sa.automount_service_account_token is True
        assert not sa.metadata.owner_references
        kubernetes.client.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "legacy"
        )
        time.sleep(3)
        assert core.read_namespaced_service_account("legacy", namespace).metadata.labels == {"team": "payments"}


def test_schema_rejects_bad_input_at_apply(crd_installed: Cluster, namespace: str) -> None:
    bad_specs = [
        {"rbac": {"rules": [{"resources": ["pods"], "verbs": ["GET ALL"]}]}},
        {"rbac": {"rules": [{"resources": [], "verbs": ["get"]}]}},
        {"network": {"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "app": "web"}]}]}},
        {"network": {"egress": [{"to": [{}]}]}},
        {"mode": "yolo"},
        {"network": {"egress": [{"to": [{"ipBlock": {"cidr": "nonsense"}}]}]}},
        {"network": {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/33"]}}]}]}},
        {"serviceAccount": {"name": "Not_A_Name"}},
    ]
    with crd_installed.api_client() as api:
        for spec in bad_specs:
            with pytest.raises(kubernetes.client.ApiException) as error:
                create_policy(api, namespace, "bad", spec)
            assert error.value.status == 422, spec
