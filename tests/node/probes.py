"""Pods running agnhost and real connections between them (kubectl exec agnhost connect)."""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes

from tests.node.conftest import NodeCluster, wait_for_service_account

# agnhost connect prints one of these before its error (k8s.io/kubernetes/test/images/agnhost/connect).
FAILURES = ("TIMEOUT", "REFUSED", "DNS", "OTHER", "UNKNOWN")
# Where the kubelet mounts a ServiceAccount token, relative to the container's root.
TOKEN_DIR = "var/run/secrets/kubernetes.io/serviceaccount"


def container_path(pid: int, path: str) -> Path:
    """`path` as the container of process `pid` sees it, on the host: symlinks resolve inside the container's root
    (through /proc/<pid>/root an absolute link would resolve against the host's; e.g. Debian's /var/run -> /run)."""
    root = Path(f"/proc/{pid}/root")
    parts, resolved, hops = [p for p in path.split("/") if p], [], 0
    while parts:
        part = parts.pop(0)
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink() and hops < 40:
            hops += 1
            target = os.readlink(candidate)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                resolved = []
            continue
        if part == "..":
            resolved = resolved[:-1]
        elif part != ".":
            resolved.append(part)
    return root.joinpath(*resolved)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def agnhost_pod(
    cluster: NodeCluster,
    name: str,
    labels: dict[str, str],
    args: list[str],
    service_account: str | None = None,
    automount: bool | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": name, "image": cluster.probe_image, "imagePullPolicy": "Never", "args": args}],
    }
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    if automount is not None:
        spec["automountServiceAccountToken"] = automount
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec}


def server_pod(cluster: NodeCluster, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """netexec: HTTP on 8080, UDP on 8081."""
    return agnhost_pod(cluster, name, labels, ["netexec", "--http-port=8080", "--udp-port=8081"])


def client_pod(cluster: NodeCluster, name: str, labels: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    return agnhost_pod(cluster, name, labels, ["pause"], **kwargs)


def run_pods(cluster: NodeCluster, namespace: str, *pods: dict[str, Any], timeout: float = 90.0) -> dict[str, str]:
    """Create the pods, wait until every one is Ready; returns name -> pod IP."""
    with cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        for pod in pods:
            wait_for_service_account(core, namespace, pod["spec"].get("serviceAccountName") or "default")
            core.create_namespaced_pod(namespace, pod)
        deadline = time.monotonic() + timeout
        ips: dict[str, str] = {}
        while time.monotonic() < deadline:
            for pod in pods:
                name = pod["metadata"]["name"]
                status = core.read_namespaced_pod(name, namespace).status
                ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
                if ready and status.pod_ip:
                    ips[name] = status.pod_ip
            if len(ips) == len(pods):
                return ips
            time.sleep(0.5)
    missing = sorted({p["metadata"]["name"] for p in pods} - set(ips))
    raise AssertionError(f"pods not Ready within {timeout}s: {missing}")


def connect(
    cluster: NodeCluster, namespace: str, pod: str, target: str, port: int, protocol: str = "tcp", timeout: float = 2.0
) -> str:
    """One real connection from `pod` to target:port: "OK", agnhost's failure kind (TIMEOUT, REFUSED, DNS, ...), or
    "EXEC FAILED: <kubectl's error>" when the probe could not run."""
    result = cluster.node.kubectl(
        "exec", "-n", namespace, pod, "--", "/agnhost", "connect", f"--timeout={timeout}s", f"--protocol={protocol}",
        f"{target}:{port}", check=False,
    )  # fmt: skip
    if result.returncode == 0:
        return "OK"
    first = (result.stderr.strip().splitlines() or [""])[0]
    kind = first.split(":", 1)[0].strip()
    # Anything else is kubectl exec itself failing (e.g. right after a kubelet restart): never "OK".
    return kind if kind in FAILURES else f"EXEC FAILED: {result.stderr.strip()[-500:]}"


def eventually_connect(
    cluster: NodeCluster,
    namespace: str,
    pod: str,
    target: str,
    port: int,
    expected: str,
    protocol: str = "tcp",
    within: float = 30.0,
) -> None:
    """Policies reach the enforcer through a watch: poll until the outcome is `expected`, fail with the last one."""
    deadline = time.monotonic() + within
    outcome = ""
    while time.monotonic() < deadline:
        outcome = connect(cluster, namespace, pod, target, port, protocol)
        if outcome == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"{namespace}/{pod} -> {target}:{port}/{protocol}: {outcome}, expected {expected}")


# Runs in the pod's network namespace (nsenter --net): the request takes the pod's path to the API server (the
# kubernetes Service, NetworkPolicies) with the pod's own token and CA bundle.
_API_REQUEST = """
import ssl, sys, urllib.error, urllib.request
ca, method, path = sys.argv[1:4]
token = sys.stdin.read().strip()
context = ssl.create_default_context(cafile=ca)
request = urllib.request.Request("https://10.96.0.1:443" + path, method=method,
                                 headers={"Authorization": "Bearer " + token})
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def api_status_from_pod(cluster: NodeCluster, namespace: str, pod: str, method: str, path: str) -> int:
    """HTTP status of one API request made from inside the pod: its network, its mounted token."""
    pid = cluster.node.container_pid(namespace, pod, pod)
    mounted = Path(f"/proc/{pid}/root") / TOKEN_DIR
    result = subprocess.run(
        ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", _API_REQUEST, str(mounted / "ca.crt"),
         method, path],
        input=(mounted / "token").read_text(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.strip())
