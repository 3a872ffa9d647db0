"""Event -> finding with the operator in its Pod on the local node vs out of the cluster, in one run.

    python benchmarks/node_event_benchmark.py [--samples 30]

The local control plane with its node (localcluster/node.py), the operator image built from the Dockerfile and
imported, the chart installed (pull policy Never). The probe is benchmarks/live_scale.py's out-of-cluster one:
create a cluster-admin ClusterRoleBinding, poll /metrics until access_hygiene_violations{rule_id="AH-RBAC-001"}
counts it. In the Pod: /metrics by Pod IP (the pod bridge routes it from the host). Then the chart's Deployment
is scaled to 0 and the same operator runs as a local process (the operator identity's kubeconfig) against the
same control plane, and the same probe runs against its /metrics. Prints p50/p99 of each and the machine.
Not a timed test: figures depend on the machine. Needs the node (one per machine: retry when the lock is held).
"""

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes
from scripts.render_chart import find_helm

from access_hygiene.k8s import resources
from access_hygiene.k8s.bootstrap import install_prerequisites
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import free_port
from access_hygiene.localcluster.image import build_image, export_image
from access_hygiene.localcluster.node import API_ADDRESS, Node
from access_hygiene.localcluster.node_cluster import (
    NAMESPACE,
    RELEASE,
    install_chart,
    metrics_url,
    poll,
    wait_operator_ready,
)
from access_hygiene.settings import OperatorSettings

RBAC = "rbac.authorization.k8s.io/v1"
POLL_SECONDS = 0.02  # as live_scale.py: each scrape costs the operator a little


def violations(url: str, rule_id: str) -> float:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("access_hygiene_violations{") and f'rule_id="{rule_id}"' in line
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def event_to_finding(api: kubernetes.client.ApiClient, url: str, samples: int, prefix: str) -> list[float]:
    """Seconds from creating a cluster-admin ClusterRoleBinding to /metrics counting its finding."""
    found: list[float] = []
    for i in range(samples):
        before = violations(url, "AH-RBAC-001")
        binding = {
            "apiVersion": RBAC,
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{prefix}-admin-{i:03d}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": f"{prefix}-{i}", "namespace": "default"}],
        }
        started = time.monotonic()
        resources.create(api, binding)
        deadline = started + 30
        while violations(url, "AH-RBAC-001") <= before:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prefix} sample {i}: no finding after 30 s")
            time.sleep(POLL_SECONDS)
        found.append(time.monotonic() - started)
    return found


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name}: n={len(values)} p50 {percentile(values, 0.5) * 1000:.0f} ms  "
        f"p99 {percentile(values, 0.99) * 1000:.0f} ms  max {max(values) * 1000:.0f} ms"
    )


def scale_operator(api: kubernetes.client.ApiClient, replicas: int) -> None:
    apps = kubernetes.client.AppsV1Api(api)
    apps.patch_namespaced_deployment_scale(RELEASE, NAMESPACE, {"spec": {"replicas": replicas}})
    core = kubernetes.client.CoreV1Api(api)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    poll(lambda: not core.list_namespaced_pod(NAMESPACE, label_selector=selector).items, 120, "the operator Pod gone")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with ControlPlane(advertise_address=API_ADDRESS) as control_plane, Node(control_plane) as node:
        api = kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig))
        install_prerequisites(api, OperatorSettings().grant_ceiling_cluster_role)
        image = build_image()
        node.import_image(export_image(image))
        install_chart(api, find_helm(), control_plane.kubeconfig, image.ref, control_plane.api_port)
        pod = wait_operator_ready(api)
        time.sleep(5)  # let start-up settle, as live_scale.py does
        in_pod = event_to_finding(api, metrics_url(pod), args.samples, "pod")
        print(summary("event -> finding, operator in its Pod on the node", in_pod), flush=True)

        scale_operator(api, 0)
        port = free_port()
        env = {**os.environ, "KUBECONFIG": str(control_plane.operator_kubeconfig), "ACCESS_HYGIENE_MODE": "audit",
               "ACCESS_HYGIENE_METRICS_PORT": str(port), "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
               "ACCESS_HYGIENE_OPERATOR_NAMESPACE": NAMESPACE}  # fmt: skip
        log = Path(control_plane.workdir or ".") / "operator.log"
        with log.open("w") as out:
            operator: Any = subprocess.Popen(
                [sys.executable, "-m", "access_hygiene.cli.main", "run", "--liveness", ""],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"

            def serving() -> bool:
                if operator.poll() is not None:
                    raise SystemExit(f"operator exited: {log.read_text()[-3000:]}")
                try:
                    return violations(url, "AH-RBAC-001") >= args.samples  # the Pod's samples are counted
                except OSError:
                    return False

            poll(serving, 120, "the out-of-cluster operator's first audit", interval=0.2)
            time.sleep(5)
            outside = event_to_finding(api, url, args.samples, "local")
        finally:
            operator.terminate()
            operator.wait(timeout=60)
        print(summary("event -> finding, operator out of the cluster (local process)", outside), flush=True)
        print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
