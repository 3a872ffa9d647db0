"""The chart installed for real on the node: the operator image built from the Dockerfile (localcluster/image.py),
imported into the node's containerd, `helm install` with pull policy Never; the kubelet runs the operator Pod under
the chart's ServiceAccount, security context and probes, and the chart's own NetworkPolicy (egress narrowed to the
API server's address and port) is enforced on its packets. The operator in the Pod reconciles examples/.

Needs podman, runc and mmdebstrap as well (the image tier's tools): without them the module is skipped with that
reason, except with CI=true, where it fails."""

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from scripts.render_chart import find_helm

from access_hygiene.handlers.health import READINESS_PATH
from access_hygiene.k8s.bootstrap import apply_manifests, load_manifests
from access_hygiene.localcluster.image import build_image, export_image, missing_tools
from access_hygiene.localcluster.node_cluster import (
    NAMESPACE,
    RELEASE,
    access_policies,
    crashed_operator,
    helm,
    install_chart,
    ready_operator_pods,
    wait_policies_ready,
)
from tests.cluster.conftest import wait_for
from tests.conftest import REPO_ROOT
from tests.node.conftest import NodeCluster
from tests.node.probes import TOKEN_DIR, container_path, jwt_claims

pytestmark = pytest.mark.node
EXAMPLES = REPO_ROOT / "examples"


@dataclass
class ChartOnNode:
    figures: dict[str, float]
    crash: str = ""  # the operator container's last log lines when it exited instead of becoming Ready

    def assert_running(self) -> None:
        assert not self.crash, f"the operator container exits under the kubelet:\n{self.crash}"


@pytest.fixture(scope="module")
def chart_installed(node_cluster: NodeCluster) -> Iterator[ChartOnNode]:
    missing = missing_tools()
    if missing:
        reason = f"the operator image needs {', '.join(missing)} (Debian: apt-get install podman runc mmdebstrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    figures: dict[str, float] = {}
    started = time.monotonic()
    image = build_image()
    node_cluster.node.import_image(export_image(image))
    figures["image build + import"] = time.monotonic() - started
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        # The namespace of an earlier module's release (test_ha_on_node.py's, when run first) may still be
        # terminating: creating it again would be refused.
        wait_for(lambda: NAMESPACE not in _names(core.list_namespace()), timeout=180, interval=0.5)
        started = time.monotonic()
        install_chart(api, find_helm(), node_cluster.kubeconfig, image.ref, node_cluster.control_plane.api_port)
        wait_for(
            lambda: ready_operator_pods(core, steady_seconds=5) or crashed_operator(core), timeout=180, interval=0.5
        )
        crash = crashed_operator(core)
        if not crash:
            figures["helm install -> operator Pod Ready"] = time.monotonic() - started
        yield ChartOnNode(figures, crash)
        # examples/ namespaces go while the operator still runs (it holds finalizers on their AccessPolicies), so
        # that the modules after this one start from a node without them.
        example_namespaces = {m["metadata"].get("namespace") for m in load_manifests([EXAMPLES])} - {None}
        for name in example_namespaces & _names(core.list_namespace()):
            core.delete_namespace(name)
        wait_for(lambda: not example_namespaces & _names(core.list_namespace()), timeout=180, interval=0.5)
        helm(find_helm(), node_cluster.kubeconfig, "uninstall", RELEASE, "--wait")
        core.delete_namespace(NAMESPACE)


def _names(object_list: Any) -> set[str]:
    return {item.metadata.name for item in object_list.items}


def test_operator_pod_runs_ready_under_the_charts_identity_and_security_context(
    node_cluster: NodeCluster, chart_installed: ChartOnNode
) -> None:
    chart_installed.assert_running()
    with node_cluster.api_client() as api:
        (pod,) = ready_operator_pods(kubernetes.client.CoreV1Api(api))
    container = pod.spec.containers[0].name
    pid = node_cluster.node.container_pid(NAMESPACE, pod.metadata.name, container)
    status = dict(
        line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
    )
    assert status["Uid"].split()[0] != "0"  # non-root, as the chart sets it
    assert status["CapEff"].strip() == "0000000000000000"
    root_mount = next(
        line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines() if line.split()[4] == "/"
    )
    assert " ro," in f" {root_mount.split()[5]}," or root_mount.split()[5].startswith("ro")
    token = container_path(pid, f"/{TOKEN_DIR}/token").read_text()
    assert jwt_claims(token)["sub"] == f"system:serviceaccount:{NAMESPACE}:{pod.spec.service_account_name}"
    print(f"\nchart on node: {', '.join(f'{k} {v:.1f}s' for k, v in chart_installed.figures.items())}")


def test_pod_turns_ready_only_once_the_operator_is(node_cluster: NodeCluster, chart_installed: ChartOnNode) -> None:
    """The readinessProbe (/readyz) is what makes the Pod Ready: the kubelet marked it Ready no earlier than the
    operator logged that its watch cache is synced and the cluster audited (with a liveness-only chart the Pod is
    Ready as soon as the container starts, seconds before)."""
    chart_installed.assert_running()
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        (pod,) = ready_operator_pods(core)
        container = pod.spec.containers[0]
        assert container.readiness_probe.http_get.path == READINESS_PATH
        log = core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container=container.name, timestamps=True)
    synced_line = next(line for line in log.splitlines() if "Watch cache synced and cluster audited" in line)
    synced = datetime.fromisoformat(synced_line.split(" ", 1)[0].replace("Z", "+00:00"))
    started = pod.status.container_statuses[0].state.running.started_at
    ready = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    print(f"\ncontainer start -> synced {(synced - started).total_seconds():.1f}s, -> Pod Ready "
          f"{(ready - started).total_seconds():.0f}s (whole seconds)")  # fmt: skip
    # The API server keeps whole seconds; the log line has microseconds. Start-up can take under a second, so no
    # lower bound on synced - started: what makes /readyz answer 503 until then is tests/unit/test_health.py's job.
    assert ready >= synced.replace(microsecond=0), (started, synced, ready)


def test_operator_in_its_pod_reconciles_the_examples(node_cluster: NodeCluster, chart_installed: ChartOnNode) -> None:
    chart_installed.assert_running()
    manifests = load_manifests([EXAMPLES])
    started = time.monotonic()
    with node_cluster.api_client() as api:
        apply_manifests(api, manifests)
        wait_policies_ready(api, access_policies(manifests))
    print(f"\nexamples Ready (operator in its Pod on the node): {time.monotonic() - started:.1f}s")


def test_deleted_operator_pod_comes_back_ready(node_cluster: NodeCluster, chart_installed: ChartOnNode) -> None:
    chart_installed.assert_running()
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        (old,) = ready_operator_pods(core)
        started = time.monotonic()
        core.delete_namespaced_pod(old.metadata.name, NAMESPACE)
        (new,) = wait_for(
            lambda: [p for p in ready_operator_pods(core) if p.metadata.uid != old.metadata.uid],
            timeout=180,
            interval=0.5,
        )
    assert new.metadata.name != old.metadata.name
    print(f"\noperator Pod deleted -> a new one Ready: {time.monotonic() - started:.1f}s")
