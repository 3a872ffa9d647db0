"""The local control plane is real: controllers run and RBAC authorises."""

import time

import kubernetes
import pytest

from tests.conftest import Cluster

pytestmark = pytest.mark.cluster


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_version_reports_the_built_release(cluster: Cluster) -> None:
    with cluster.api_client() as api:
        version = kubernetes.client.VersionApi(api).get_code()
    assert version.git_version == "v1.36.3"
    assert (version.major, version.minor) == ("1", "36")


def test_new_namespace_gets_default_service_account(cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)

        def default_sa_exists() -> bool:
            names = [sa.metadata.name for sa in core.list_namespaced_service_account(namespace).items]
            return "default" in names

        assert _wait_for(default_sa_exists), "kube-controller-manager did not create the default ServiceAccount"


def _sar(api: kubernetes.client.ApiClient, user: str, verb: str, resource: str, namespace: str) -> bool:
    review = kubernetes.client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace},
            },
        }
    )
    return bool(review.status.allowed)


def test_subject_access_review_follows_a_role(cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "configmap-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "alice-reads-configmaps"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "configmap-reader",
                },
                "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
            },
        )
        # The authorizer learns of a new binding from its own watch: wait for it (seen late once under CI load).
        assert _wait_for(lambda: _sar(api, "alice", "get", "configmaps", namespace))
        assert _sar(api, "alice", "list", "configmaps", namespace)
        assert not _sar(api, "alice", "delete", "configmaps", namespace)
        assert not _sar(api, "alice", "get", "secrets", namespace)
        assert not _sar(api, "alice", "get", "configmaps", "default")
        assert not _sar(api, "bob", "get", "configmaps", namespace)
