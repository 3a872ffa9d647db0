"""Live scan benchmark: `access-hygiene scan` against the local control plane holding the benchmark's objects,
next to a bare paged LIST of the same kinds (raw JSON, no client models) as the floor any live scan pays.

    python benchmarks/live_benchmark.py [--objects 5000] [--repeat 3] [--workers 8]

Starts a real control plane (etcd, kube-apiserver, kube-controller-manager on loopback; built by
controlplane/build.sh), creates the generated objects (scan_benchmark.generate) and their namespaces, then
prints for each: wall seconds (median of --repeat), the child's peak RSS for the CLI, and the CLI's phases
(snapshot = the live load). Not a timed test: figures depend on the machine.
"""

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from scan_benchmark import generate

from access_hygiene.k8s.snapshot_loader import PAGE_SIZE, SNAPSHOT_KINDS
from access_hygiene.localcluster.controlplane import ControlPlane

PLURALS = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
           "RoleBinding": "rolebindings", "Namespace": "namespaces", "ServiceAccount": "serviceaccounts",
           "Pod": "pods", "NetworkPolicy": "networkpolicies", "Deployment": "deployments",
           "StatefulSet": "statefulsets", "DaemonSet": "daemonsets", "ReplicaSet": "replicasets", "Job": "jobs",
           "CronJob": "cronjobs", "AccessPolicy": "accesspolicies"}  # fmt: skip


class Api:
    def __init__(self, plane: ControlPlane) -> None:
        self.server, self.token = plane.server, plane.admin_token
        self.context = ssl.create_default_context(cafile=str(plane.ca_cert))

    def request(self, method: str, path: str, body: Any = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, context=self.context, timeout=60) as response:
            return bytes(response.read())

    def create(self, obj: dict[str, Any]) -> None:
        api_version, kind = obj["apiVersion"], obj["kind"]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        namespace = obj["metadata"].get("namespace")
        path = f"{base}/namespaces/{namespace}/{PLURALS[kind]}" if namespace else f"{base}/{PLURALS[kind]}"
        try:
            self.request("POST", path, obj)
        except urllib.error.HTTPError as error:
            if error.code != 409:  # already there (a previous run on the same plane)
                raise

    def paged_list(self) -> int:
        """Every object of the kinds the scan reads, paged like the scan, parsed as plain JSON."""
        count = 0
        for api_version, kind in SNAPSHOT_KINDS:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            token = ""
            while True:
                query = f"?limit={PAGE_SIZE}" + (f"&continue={token}" if token else "")
                try:
                    page = json.loads(self.request("GET", f"{base}/{PLURALS[kind]}{query}"))
                except urllib.error.HTTPError as error:
                    if error.code == 404:  # AccessPolicy without its CRD
                        break
                    raise
                count += len(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or ""
                if not token:
                    break
        return count


def run_scan(kubeconfig: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "access_hygiene.cli.main", "scan", "--kubeconfig", str(kubeconfig), "-o", "json"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "ACCESS_HYGIENE_TIMINGS": "1"})  # fmt: skip
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        stderr.seek(0)
        errors = stderr.read().decode()
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"scan failed: {errors}")
    timings = next((json.loads(line)["timings"] for line in errors.splitlines() if line.startswith('{"timings"')), {})
    return {"wall": wall, "rss": usage.ru_maxrss / 1024, "phases": timings.get("wall", {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8, help="parallel creates while loading the objects")
    args = parser.parse_args()

    objects = generate(args.objects, args.seed)
    namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
    with ControlPlane() as plane:
        api = Api(plane)
        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(api.create, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                                       for n in namespaces]))  # fmt: skip
            list(pool.map(api.create, objects))
        print(
            f"created {len(objects)} objects in {len(namespaces)} namespaces in {time.perf_counter() - started:.1f} s"
        )
        listed = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            count = api.paged_list()
            listed.append(time.perf_counter() - started)
        scans = [run_scan(plane.kubeconfig) for _ in range(args.repeat)]
    phases = {p: statistics.median(s["phases"].get(p, 0.0) for s in scans) for p in ("import", "snapshot", "audit",
                                                                                      "output")}  # fmt: skip
    print(f"bare paged LIST ({count} objects, raw JSON): {statistics.median(listed):.2f} s wall")
    print(f"access-hygiene scan --kubeconfig (live):   {statistics.median(s['wall'] for s in scans):.2f} s wall, "
          f"{statistics.median(s['rss'] for s in scans):.0f} MiB peak RSS")  # fmt: skip
    print("  phases (wall s): " + ", ".join(f"{p} {v:.2f}" for p, v in phases.items()) + " (snapshot = live load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
