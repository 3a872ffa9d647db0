"""Where the operator finds the API server in a Pod: the kubelet's service env, not cluster DNS."""

import pytest

from access_hygiene.k8s.client import in_cluster_server

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://127.0.0.1:6443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}, "https://[fd00:10:96::1]:443"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, None),
        ({"KUBERNETES_SERVICE_PORT": "443"}, None),
        ({}, None),
    ],
)
def test_in_cluster_server_comes_from_the_kubelet_service_env(env: dict[str, str], server: str | None) -> None:
    assert in_cluster_server(env) == server
