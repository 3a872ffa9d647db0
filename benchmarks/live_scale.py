"""The event-driven operator at scale on the real local control plane. Prints figures; asserts nothing.

    python benchmarks/live_scale.py                 # full scale (see SCALE), about 15 minutes here
    python benchmarks/live_scale.py --factor 0.25   # a quarter of every count

Measures, in one run:
- the floor: one bare paged LIST (raw JSON) of every populated kind;
- operator start -> every AccessPolicy Ready, and -> every namespace fixed (enforce mode);
- event -> finding in /metrics (a cluster-admin ClusterRoleBinding) and event -> converged (an AccessPolicy's
  rules changed -> its Role updated): p50/p99 over --samples;
- the operator's API requests by verb over --idle-seconds of idleness, from the API server's audit log;
- the operator's peak RSS (VmHWM).
"""

import argparse
import concurrent.futures
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from access_hygiene.k8s import resources  # noqa: E402
from access_hygiene.k8s.client import make_api_client  # noqa: E402
from access_hygiene.k8s.crds import install_crd  # noqa: E402
from access_hygiene.localcluster.controlplane import OPERATOR_USER, ControlPlane, free_port  # noqa: E402
from access_hygiene.models.crd import build_crd  # noqa: E402
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role  # noqa: E402

SCALE = {
    "namespaces": 2000,
    "serviceaccounts": 10000,
    "roles": 5000,
    "rolebindings": 20000,
    "clusterroles": 500,
    "clusterrolebindings": 1000,
    "deployments": 2000,
    "accesspolicies": 1000,
}
RBAC = "rbac.authorization.k8s.io/v1"
MODE_LABEL = {"accesshygiene.io/mode": "enforce"}
# Latency probes poll this often: every scrape of /metrics and every GET costs the operator or the API server
# CPU on the same two cores, so a tighter loop would inflate what it measures.
POLL_SECONDS = 0.025


def population(counts: dict[str, int]) -> list[dict[str, Any]]:
    namespaces = [f"ns-{i:05d}" for i in range(counts["namespaces"])]
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": MODE_LABEL}} for ns in namespaces
    ]
    for i in range(counts["clusterroles"]):
        rules = [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list"]}]
        if i % 50 == 0:
            rules.append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
        objects.append({"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": f"cr-{i:04d}"}, "rules": rules})
    for i in range(counts["serviceaccounts"]):
        ns = namespaces[i % len(namespaces)]
        objects.append(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": f"sa-{i:05d}", "namespace": ns}}
        )
    for i in range(counts["roles"]):
        ns = namespaces[i % len(namespaces)]
        rules = [{"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]}]
        objects.append(
            {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": f"role-{i:05d}", "namespace": ns}, "rules": rules}
        )
    for i in range(counts["rolebindings"]):
        ns = namespaces[i % len(namespaces)]
        sa = f"sa-{(i % counts['serviceaccounts']):05d}"
        sa_ns = namespaces[(i % counts["serviceaccounts"]) % len(namespaces)]
        ref = (
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"cr-{i % counts['clusterroles']:04d}",
            }
            if i % 2
            else {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"role-{(i % counts['roles']):05d}"}
        )
        if ref["kind"] == "Role":
            ns = namespaces[(i % counts["roles"]) % len(namespaces)]
        objects.append(
            {
                "apiVersion": RBAC,
                "kind": "RoleBinding",
                "metadata": {"name": f"rb-{i:05d}", "namespace": ns},
                "roleRef": ref,
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
            }
        )
    for i in range(counts["clusterrolebindings"]):
        sa = f"sa-{(i * 7 % counts['serviceaccounts']):05d}"
        sa_ns = namespaces[(i * 7 % counts["serviceaccounts"]) % len(namespaces)]
        objects.append(
            {
                "apiVersion": RBAC,
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"crb-{i:04d}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": f"cr-{i % counts['clusterroles']:04d}",
                },
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
            }
        )
    for i in range(counts["deployments"]):
        ns = namespaces[i % len(namespaces)]
        labels = {"app": f"app-{i:05d}"}
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{i:05d}", "namespace": ns},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
                    },
                },
            }
        )
    for i in range(counts["accesspolicies"]):
        ns = namespaces[i % len(namespaces)]
        objects.append(policy(ns, f"ap-{i:05d}", ["get"]))
    return objects


def policy(namespace: str, name: str, verbs: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "accesshygiene.io/v1alpha1",
        "kind": "AccessPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "mode": "enforce",
            "rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": verbs}]},
            "network": {"dns": True},
        },
    }


def populate(api: Any, objects: list[dict[str, Any]]) -> float:
    started = time.monotonic()
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] != "Namespace"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda o: resources.create(api, o), namespaces))
        list(pool.map(lambda o: resources.create(api, o), rest))
    return time.monotonic() - started


def floor_seconds(api: Any) -> tuple[float, int]:
    kinds = [
        ("v1", "Namespace"),
        ("v1", "ServiceAccount"),
        (RBAC, "Role"),
        (RBAC, "RoleBinding"),
        (RBAC, "ClusterRole"),
        (RBAC, "ClusterRoleBinding"),
        ("apps/v1", "Deployment"),
        ("accesshygiene.io/v1alpha1", "AccessPolicy"),
    ]
    started = time.monotonic()
    count = sum(1 for api_version, kind in kinds for _ in resources.list_objects(api, api_version, kind))
    return time.monotonic() - started, count


def apply_floor(api: Any, count: int, namespaces: int) -> float:
    """Seconds for `count` server-side applies of small ConfigMaps (16 threads): what writing costs here."""

    def one(i: int) -> None:
        ns = f"ns-{i % namespaces:05d}"
        resources.apply(
            api,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"floor-{i}", "namespace": ns},
                "data": {"k": "v"},
            },
        )

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def violations(port: int, rule_id: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("access_hygiene_violations{") and f'rule_id="{rule_id}"' in line
    )


def rss_mib(pid: int) -> str:
    """Current and peak resident memory of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (
        f"RSS {int(fields['VmRSS'].split()[0]) / 1024:.0f} MiB, peak {int(fields['VmHWM'].split()[0]) / 1024:.0f} MiB"
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ready_counts(api: Any) -> tuple[int, int]:
    ready = total = 0
    for obj in resources.list_objects(api, "accesshygiene.io/v1alpha1", "AccessPolicy"):
        total += 1
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready += any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready, total


def fixed_namespaces(api: Any) -> int:
    return sum(
        1
        for sa in resources.list_objects(api, "v1", "ServiceAccount")
        if sa["metadata"]["name"] == "default"
        and sa["metadata"]["namespace"].startswith("ns-")
        and sa.get("automountServiceAccountToken") is False
    )


def operator_requests(audit_log: Path, since: float, until: float, detail: bool = False) -> Counter[str]:
    """The operator's requests in the window, by verb (detail: by verb, resource and client: kopf or ours)."""
    verbs: Counter[str] = Counter()
    with audit_log.open() as log:
        for line in log:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
                continue
            stamp = event["requestReceivedTimestamp"]
            when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            if since <= when <= until:
                client = "kopf" if str(event.get("userAgent", "")).startswith("kopf") else "access-hygiene"
                resource = (event.get("objectRef") or {}).get("resource", "")
                verbs[f"{event['verb']} {resource} ({client})" if detail else event["verb"]] += 1
    return verbs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=1.0, help="scale every count by this factor")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--idle-seconds", type=float, default=600)
    parser.add_argument(
        "--python-args", default="", help="interpreter arguments for the operator, e.g. '-m memray run -o out.bin'"
    )
    args = parser.parse_args()
    counts = {k: max(1, int(v * args.factor)) for k, v in SCALE.items()}
    print(f"machine: {os.cpu_count()} cores; scale factor {args.factor}: {counts}", flush=True)
    with ControlPlane(audit_log=True) as control_plane, make_api_client(str(control_plane.kubeconfig)) as api:
        install_crd(api, build_crd())
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        objects = population(counts)
        seconds = populate(api, objects)
        print(f"populated {len(objects)} objects in {seconds:.1f}s", flush=True)
        floors = [floor_seconds(api) for _ in range(3)]
        floor = statistics.median(f[0] for f in floors)
        print(f"floor: bare paged LIST of {floors[0][1]} objects: {floor:.2f}s (median of 3)", flush=True)

        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(control_plane.operator_kubeconfig),
            "PYTHONPATH": str(ROOT / "operator"),
            "ACCESS_HYGIENE_MODE": "enforce",
            "ACCESS_HYGIENE_METRICS_PORT": str(port),
            "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
            "ACCESS_HYGIENE_OPERATOR_NAMESPACE": "access-hygiene",
        }
        log = Path(control_plane.workdir or ".") / "operator.log"  # type: ignore[operator]
        started = time.monotonic()
        with log.open("w") as out:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    *shlex.split(args.python_args),
                    "-m",
                    "access_hygiene.cli.main",
                    "run",
                    "--liveness",
                    "",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            all_ready = all_fixed = None
            while all_ready is None or all_fixed is None:
                time.sleep(1.0)
                if operator.poll() is not None:
                    raise SystemExit(f"operator exited: {log.read_text()[-3000:]}")
                if all_ready is None:
                    ready, total = ready_counts(api)
                    if ready == total == counts["accesspolicies"]:
                        all_ready = time.monotonic() - started
                if all_fixed is None and fixed_namespaces(api) >= counts["namespaces"]:
                    all_fixed = time.monotonic() - started
            print(
                f"start -> all {counts['accesspolicies']} AccessPolicies Ready: {all_ready:.1f}s "
                f"({all_ready / floor:.1f}x the floor)",
                flush=True,
            )
            print(
                f"start -> all {counts['namespaces']} namespaces fixed: {all_fixed:.1f}s "
                f"({all_fixed / floor:.1f}x the floor)",
                flush=True,
            )
            print(f"operator memory once converged: {rss_mib(operator.pid)}", flush=True)
            writes = operator_requests(control_plane.audit_log_path, time.time() - all_ready - 5, time.time())
            write_count = sum(n for verb, n in writes.items() if verb in ("create", "patch", "update", "delete"))
            write_floor = apply_floor(api, write_count, counts["namespaces"])
            print(
                f"the operator wrote {write_count} times to converge ({dict(writes)}); the same number of bare "
                f"server-side applies from 16 threads takes {write_floor:.1f}s (the write floor); "
                f"start -> all Ready is {all_ready / max(write_floor + floor, 1e-9):.1f}x LIST + write floor",
                flush=True,
            )
            time.sleep(5)

            finding: list[float] = []
            for i in range(args.samples):
                before = violations(port, "AH-RBAC-001")
                t0 = time.monotonic()
                resources.create(
                    api,
                    {
                        "apiVersion": RBAC,
                        "kind": "ClusterRoleBinding",
                        "metadata": {"name": f"bench-admin-{i:03d}"},
                        "roleRef": {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "ClusterRole",
                            "name": "cluster-admin",
                        },
                        "subjects": [{"kind": "ServiceAccount", "name": f"bench-{i}", "namespace": "ns-00000"}],
                    },
                )
                while violations(port, "AH-RBAC-001") <= before:
                    time.sleep(POLL_SECONDS)
                finding.append(time.monotonic() - t0)
            print(
                f"event -> finding in /metrics: p50 {percentile(finding, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(finding, 0.99) * 1000:.0f} ms over {len(finding)} samples",
                flush=True,
            )

            converge: list[float] = []
            for i in range(args.samples):
                ns, name = f"ns-{i % counts['namespaces']:05d}", f"ap-{i:05d}"
                if i >= counts["accesspolicies"]:
                    break
                verbs = ["get", "list"] if i % 2 == 0 else ["get", "watch"]
                role_name = f"access-hygiene-{name}"
                t0 = time.monotonic()
                resources.request(
                    api,
                    "PATCH",
                    f"/apis/accesshygiene.io/v1alpha1/namespaces/{ns}/accesspolicies/{name}",
                    body=[{"op": "replace", "path": "/spec/rbac/rules/0/verbs", "value": verbs}],
                    content_type="application/json-patch+json",
                )
                while True:
                    role = resources.get(api, RBAC, "Role", role_name, ns)
                    if role and sorted(role["rules"][0]["verbs"]) == sorted(verbs):
                        break
                    time.sleep(POLL_SECONDS)
                converge.append(time.monotonic() - t0)
            print(
                f"event -> converged (AccessPolicy rules -> Role): p50 {percentile(converge, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(converge, 0.99) * 1000:.0f} ms over {len(converge)} samples",
                flush=True,
            )

            time.sleep(5)
            idle_from = time.time()
            time.sleep(args.idle_seconds)
            idle_to = time.time()
            time.sleep(2)  # the audit log is written asynchronously
            verbs = operator_requests(control_plane.audit_log_path, idle_from, idle_to, detail=True)
            print(f"operator API requests over {args.idle_seconds:.0f} idle seconds, by verb: {dict(verbs) or 'none'}")
            status = Path(f"/proc/{operator.pid}/status").read_text()
            peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
            print(f"operator peak RSS: {int(peak.split()[1]) / 1024:.0f} MiB", flush=True)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            (Path(os.environ.get("TMPDIR", "/tmp")) / "live_scale_operator.log").write_text(log.read_text())


if __name__ == "__main__":
    main()
