"""Node-tier fixtures: a real node (containerd + runc, kubelet, kube-proxy, CoreDNS, kube-network-policies) on a
control plane of its own, brought up once per session (localcluster/node.py)."""

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import kubernetes
import pytest

from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.node import API_ADDRESS, Node, missing_prerequisites
from tests.conftest import Cluster


@dataclass
class NodeCluster(Cluster):
    node: Node

    @property
    def probe_image(self) -> str:
        return self.node.images["agnhost"]


@pytest.fixture(scope="session")
def node_cluster() -> Iterator[NodeCluster]:
    problems = missing_prerequisites()
    if problems:
        message = "the node tier cannot run here: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    # The audit log: test_ha_on_node.py counts the operator Pods' writes by Pod.
    with ControlPlane(advertise_address=API_ADDRESS, audit_log=True) as control_plane, Node(control_plane) as node:
        print(f"\nNode up: {', '.join(f'{k} {v:.1f}s' for k, v in node.timings.items())}")
        yield NodeCluster(control_plane, node)


@pytest.fixture
def node_namespace(node_cluster: NodeCluster) -> Iterator[str]:
    """A fresh namespace on the node's cluster, deleted afterwards (its pods with it)."""
    name = f"n-{uuid.uuid4().hex[:10]}"
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name, "labels": {"test": "node"}}})
        wait_for_service_account(core, name)
        yield name
        core.delete_namespace(name, grace_period_seconds=0)


def wait_for_service_account(core: kubernetes.client.CoreV1Api, namespace: str, name: str = "default") -> None:
    """kube-controller-manager creates a namespace's `default` ServiceAccount a moment after the namespace: until then
    Pods that run as it are refused and a patch of it is a 404 (Kubernetes' own e2e framework waits for it too)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            core.read_namespaced_service_account(name, namespace)
            return
        except kubernetes.client.ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`local --node` (test_local_node_cmd.py) starts a node of its own: it runs first, before the session's node
    exists (one node per machine)."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] != "tests/node/test_local_node_cmd.py")
