"""The chart installed for real on the node: the operator image built from the Dockerfile (localcluster/image.py),
imported into the node's containerd, `helm install` with pull policy Never; the kubelet runs the operator Pod under
the chart's ServiceAccount, security context and probes, and the chart's own NetworkPolicy (egress narrowed to the
API server's address and port) is enforced on its packets. The operator in the Pod reconciles examples/.

Needs podman, runc and mmdebstrap as well (the image tier's tools): without them the module is skipped with that
reason, except with CI=true, where it fails."""

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from scripts.render_chart import CHART, find_helm

from access_hygiene.k8s.bootstrap import apply_manifests, load_manifests
from access_hygiene.localcluster.image import build_image, export_image, missing_tools
from access_hygiene.localcluster.node import API_ADDRESS
from tests.cluster.conftest import wait_for
from tests.conftest import REPO_ROOT
from tests.node.conftest import NodeCluster
from tests.node.probes import TOKEN_DIR, container_path, jwt_claims

pytestmark = pytest.mark.node
RELEASE = NAMESPACE = "access-hygiene"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
EXAMPLES = REPO_ROOT / "examples"


def _helm(cluster: NodeCluster, *args: str) -> str:
    command = [str(find_helm()), *args, "--kubeconfig", str(cluster.kubeconfig), "--namespace", NAMESPACE]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _ready_pods(core: kubernetes.client.CoreV1Api, steady_seconds: float = 0.0) -> list[Any]:
    """Ready operator Pods (not being deleted) whose container has been running for `steady_seconds` without a
    restart (a container that crashes right after starting is Ready for a moment)."""
    now = datetime.now(UTC)
    ready = []
    for pod in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items:
        if pod.metadata.deletion_timestamp is not None:
            continue
        if not any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            continue
        statuses = pod.status.container_statuses or []
        if steady_seconds and not all(
            s.restart_count == 0
            and s.state.running
            and (now - s.state.running.started_at).total_seconds() >= steady_seconds
            for s in statuses
        ):
            continue
        ready.append(pod)
    return ready


@dataclass
class ChartOnNode:
    figures: dict[str, float]
    crash: str = ""  # the operator container's last log lines when it exited instead of becoming Ready

    def assert_running(self) -> None:
        assert not self.crash, f"the operator container exits under the kubelet:\n{self.crash}"


def _crashed(core: kubernetes.client.CoreV1Api) -> str:
    for pod in core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items:
        for status in pod.status.container_statuses or []:
            if status.restart_count and status.last_state.terminated:
                return str(core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, previous=True, tail_lines=12))
    return ""


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
    repository, tag = image.ref.rsplit(":", 1)
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        labels = {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
        core.create_namespace({"metadata": {"name": NAMESPACE, "labels": labels}})
        started = time.monotonic()
        _helm(node_cluster, "install", RELEASE, str(CHART),
              "--set", f"image.repository={repository}", "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
              # The operator's own NetworkPolicy, narrowed to where the API server really is (after DNAT).
              "--set", f"networkPolicy.apiServer.cidrs={{{API_ADDRESS}/32}}",
              "--set", f"networkPolicy.apiServer.ports={{{node_cluster.control_plane.api_port}}}")  # fmt: skip
        wait_for(lambda: _ready_pods(core, steady_seconds=5) or _crashed(core), timeout=180, interval=0.5)
        crash = _crashed(core)
        if not crash:
            figures["helm install -> operator Pod Ready"] = time.monotonic() - started
        yield ChartOnNode(figures, crash)
        # examples/ namespaces go while the operator still runs (it holds finalizers on their AccessPolicies), so
        # that the modules after this one start from a node without them.
        example_namespaces = {m["metadata"].get("namespace") for m in load_manifests([EXAMPLES])} - {None}
        for name in example_namespaces & _names(core.list_namespace()):
            core.delete_namespace(name)
        wait_for(lambda: not example_namespaces & _names(core.list_namespace()), timeout=180, interval=0.5)
        _helm(node_cluster, "uninstall", RELEASE, "--wait")
        core.delete_namespace(NAMESPACE)


def _ready(policy: dict[str, Any]) -> bool:
    conditions = (policy.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _names(object_list: Any) -> set[str]:
    return {item.metadata.name for item in object_list.items}


def test_operator_pod_runs_ready_under_the_charts_identity_and_security_context(
    node_cluster: NodeCluster, chart_installed: ChartOnNode
) -> None:
    chart_installed.assert_running()
    with node_cluster.api_client() as api:
        (pod,) = _ready_pods(kubernetes.client.CoreV1Api(api))
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


def test_operator_in_its_pod_reconciles_the_examples(node_cluster: NodeCluster, chart_installed: ChartOnNode) -> None:
    chart_installed.assert_running()
    manifests = load_manifests([EXAMPLES])
    started = time.monotonic()
    with node_cluster.api_client() as api:
        apply_manifests(api, manifests)
        custom = kubernetes.client.CustomObjectsApi(api)
        wanted = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests if m["kind"] == "AccessPolicy"}

        def ready() -> bool:
            items = custom.list_cluster_custom_object("accesshygiene.io", "v1alpha1", "accesspolicies")["items"]
            done = {
                (p["metadata"]["namespace"], p["metadata"]["name"])
                for p in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (p.get("status") or {}).get("conditions") or []
                )
            }
            return wanted <= done

        wait_for(ready, timeout=120, interval=0.5)
    print(f"\nexamples Ready (operator in its Pod on the node): {time.monotonic() - started:.1f}s")


def test_deleted_operator_pod_comes_back_ready(node_cluster: NodeCluster, chart_installed: ChartOnNode) -> None:
    chart_installed.assert_running()
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        (old,) = _ready_pods(core)
        started = time.monotonic()
        core.delete_namespaced_pod(old.metadata.name, NAMESPACE)
        (new,) = wait_for(
            lambda: [p for p in _ready_pods(core) if p.metadata.uid != old.metadata.uid], timeout=180, interval=0.5
        )
    assert new.metadata.name != old.metadata.name
    print(f"\noperator Pod deleted -> a new one Ready: {time.monotonic() - started:.1f}s")
