"""The chart on a node: the operator image (localcluster/image.py, the project's Dockerfile) imported into the node's
containerd and installed with `helm install` (pull policy Never), the chart's own NetworkPolicy narrowed to where
the API server really is. Used by `access-hygiene local --node` and by the node tier (tests/node/)."""

import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

from access_hygiene.localcluster.node import API_ADDRESS

RELEASE = NAMESPACE = "access-hygiene"
SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
# The operator's namespace enforces the restricted Pod Security level: the chart's Pod must pass it.
NAMESPACE_LABELS = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class ChartError(RuntimeError):
    pass


def chart_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "helm" / "access-hygiene"


def install_values(image_ref: str, api_port: int) -> list[str]:
    """helm `--set` arguments: the locally built image (never pulled), the chart's NetworkPolicy egress narrowed
    to the API server's address as pods reach it (after DNAT: the relay at API_ADDRESS) and its port, one replica."""
    repository, tag = image_ref.rsplit(":", 1)
    values = {
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "networkPolicy.apiServer.cidrs": f"{{{API_ADDRESS}/32}}",
        "networkPolicy.apiServer.ports": f"{{{api_port}}}",
        # One node: a second replica adds no availability, and the one printed /metrics URL is the leader's.
        "replicaCount": "1",
    }
    return [argument for key, value in values.items() for argument in ("--set", f"{key}={value}")]


def helm(helm_bin: Path, kubeconfig: Path, *args: str, timeout: float = 300) -> str:
    command = [str(helm_bin), *args, "--kubeconfig", str(kubeconfig), "--namespace", NAMESPACE]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if result.returncode != 0:
        raise ChartError(f"helm {' '.join(args[:2])} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def install_chart(api: kubernetes.client.ApiClient, helm_bin: Path, kubeconfig: Path, image_ref: str,
                  api_port: int, extra: Sequence[str] = ()) -> None:  # fmt: skip
    """The operator's namespace (restricted Pod Security) and `helm install` of the chart with the local image;
    `extra` helm arguments come last (e.g. `--set replicaCount=2`)."""
    core = kubernetes.client.CoreV1Api(api)
    namespace: Any = {"metadata": {"name": NAMESPACE, "labels": NAMESPACE_LABELS}}
    core.create_namespace(namespace)
    helm(helm_bin, kubeconfig, "install", RELEASE, str(chart_dir()), *install_values(image_ref, api_port), *extra)


def ready_operator_pods(core: kubernetes.client.CoreV1Api, steady_seconds: float = 0.0) -> list[Any]:
    """Ready operator Pods (not being deleted) whose container has been running for `steady_seconds` without a
    restart (a container that crashes right after starting is Ready for a moment)."""
    now = datetime.now(UTC)
    ready = []
    pods: list[Any] = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
    for pod in pods:
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


def crashed_operator(core: kubernetes.client.CoreV1Api) -> str:
    """The last log lines of an operator container that exited (empty when none did)."""
    pods: list[Any] = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
    for pod in pods:
        for status in pod.status.container_statuses or []:
            if status.restart_count and status.last_state.terminated:
                return str(core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, previous=True, tail_lines=12))
    return ""


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """`check()`'s first truthy result, polled every `interval` seconds; ChartError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise ChartError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_operator_ready(api: kubernetes.client.ApiClient, timeout: float = 180, steady_seconds: float = 5) -> Any:
    """The operator Pod once Ready and steady; ChartError with its last log lines if its container exits."""
    core = kubernetes.client.CoreV1Api(api)
    poll(lambda: ready_operator_pods(core, steady_seconds) or crashed_operator(core), timeout, "the operator Pod")
    crash = crashed_operator(core)
    if crash:
        raise ChartError(f"the operator container exits under the kubelet:\n{crash}")
    return ready_operator_pods(core)[0]


def metrics_url(pod: Any) -> str:
    """/metrics of the operator Pod, by its Pod IP: the pod bridge routes it from the host."""
    port = next(p.container_port for c in pod.spec.containers for p in c.ports or [] if p.name == "metrics")
    return f"http://{pod.status.pod_ip}:{port}/metrics"


def ready_policies(custom: kubernetes.client.CustomObjectsApi) -> set[tuple[str, str]]:
    """(namespace, name) of the AccessPolicies whose Ready condition is True."""
    listed: Any = custom.list_cluster_custom_object("accesshygiene.io", "v1alpha1", "accesspolicies")
    items: list[dict[str, Any]] = listed["items"]
    return {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for p in items
        if any(c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or [])
    }


def access_policies(manifests: Iterable[dict[str, Any]]) -> set[tuple[str, str]]:
    """(namespace, name) of the AccessPolicies among `manifests`."""
    return {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests if m["kind"] == "AccessPolicy"}


def wait_policies_ready(api: kubernetes.client.ApiClient, wanted: set[tuple[str, str]], timeout: float = 120) -> None:
    custom = kubernetes.client.CustomObjectsApi(api)
    poll(lambda: wanted <= ready_policies(custom), timeout, f"{len(wanted)} AccessPolicies Ready")
