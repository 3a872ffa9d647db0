"""Faults on the node (this module runs last: it restarts the session's kubelet and containerd). Containers outlive
both: a crash of either neither restarts a running container nor breaks its traffic, and the node still starts
new pods afterwards."""

import kubernetes
import pytest

from tests.node.conftest import NodeCluster
from tests.node.probes import client_pod, eventually_connect, run_pods, server_pod

pytestmark = pytest.mark.node


@pytest.mark.parametrize("component", ["kubelet", "containerd"])
def test_running_pods_survive_a_crash_of(node_cluster: NodeCluster, node_namespace: str, component: str) -> None:
    ns, node = node_namespace, node_cluster.node
    ips = run_pods(node_cluster, ns, server_pod(node_cluster, "server", {"app": "server"}),
                   client_pod(node_cluster, "client", {"app": "client"}))  # fmt: skip
    pid = node.container_pid(ns, "server", "server")

    node.restart(component, down_seconds=3)

    assert node.container_pid(ns, "server", "server") == pid  # the same process: never restarted
    eventually_connect(node_cluster, ns, "client", ips["server"], 8080, "OK")
    with node_cluster.api_client() as api:
        statuses = kubernetes.client.CoreV1Api(api).read_namespaced_pod("server", ns).status.container_statuses
    assert [s.restart_count for s in statuses] == [0]
    # The node still runs new pods.
    run_pods(node_cluster, ns, client_pod(node_cluster, "after", {"app": "after"}))
