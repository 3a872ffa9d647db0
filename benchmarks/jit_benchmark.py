"""Just-in-time access benchmark: the operator (`access-hygiene run`, a subprocess) against a real control plane.

    python benchmarks/jit_benchmark.py [--together 100,1000] [--usable 10] [--active 1000]

1. request -> usable: for --usable requests one after another, the time from creating the AccessApproval until
   the requester's own `list pods` (a ServiceAccount token) succeeds.
2. revocation lag: for each size in --together, that many grants with the same startAt and duration, so they
   start and expire together; a watch on the grant RoleBindings records when each was added and deleted. Lag =
   deletion seen by the watch - expiresAt (the watch's delivery, a few ms, is included); start lag likewise.
3. floor: after each round, the same number of plain RoleBindings (another label: the operator does not own them)
   deleted by the benchmark itself at one instant from 8 threads (the operator's REVOKE_THREADS), lag measured the
   same way: what this API server and machine allow for that many DELETEs at once, no operator decision in it.
4. RSS: the operator's resident memory idle, then with --active grants active at once.
Not a timed test: figures depend on the machine (2 cores shared); run it on a quiet one and say what else ran.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import urllib3

from access_hygiene.k8s import resources
from access_hygiene.k8s.crds import install_crd
from access_hygiene.localcluster.controlplane import ControlPlane
from access_hygiene.models.crd import build_crds
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

GV = "accesshygiene.io/v1alpha1"
NAMESPACE = "jit-bench"
ROLE = "jit-pod-reader"
LABEL = "accesshygiene.io/access-request"
FLOOR_LABEL = "accesshygiene.io/benchmark-floor"
REVOKE_THREADS = 8  # as the operator's (k8s/access_grants.py)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class BindingWatch:
    """When each grant RoleBinding of the namespace was added and deleted, as a watch sees it."""

    def __init__(self, api: kubernetes.client.ApiClient, label: str = LABEL) -> None:
        self.api = api
        self.label = label
        self.added: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        rbac = kubernetes.client.RbacAuthorizationV1Api(self.api)
        version = self._listed_version(rbac)
        while not self._stop.is_set():
            watch = kubernetes.watch.Watch()
            try:
                for event in watch.stream(rbac.list_namespaced_role_binding, NAMESPACE, label_selector=self.label,
                                          resource_version=version, timeout_seconds=30):  # fmt: skip
                    seen = time.time()
                    obj = event["object"]
                    version = obj.metadata.resource_version
                    if event["type"] == "ADDED":
                        self.added.setdefault(obj.metadata.name, seen)
                    elif event["type"] == "DELETED":
                        self.deleted.setdefault(obj.metadata.name, seen)
                    if self._stop.is_set():
                        break
            except urllib3.exceptions.ProtocolError:
                continue  # the server ended the stream: resume from the last version
            except kubernetes.client.ApiException as error:
                if error.status != 410:
                    raise
                # A watch with no events for a while (the floor's between rounds) outlives its version: list again.
                version = self._listed_version(rbac)

    def _listed_version(self, rbac: Any) -> str:
        return str(rbac.list_namespaced_role_binding(NAMESPACE, label_selector=self.label).metadata.resource_version)

    def stop(self) -> None:
        self._stop.set()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def request_body(name: str, username: str, duration: str, start_at: str | None = None) -> dict[str, Any]:
    spec = {"eligibility": "bench", "requester": {"username": username}, "duration": duration, "reason": "benchmark"}
    if start_at:
        spec["startAt"] = start_at
    return {"apiVersion": GV, "kind": "AccessRequest", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def approval_body(name: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "AccessApproval", "metadata": {"name": f"ok-{name}", "namespace": NAMESPACE},
            "spec": {"request": name, "approver": {"username": "bob"}, "decision": "Approve"}}  # fmt: skip


def prepare(api: kubernetes.client.ApiClient) -> tuple[str, str]:
    for crd in build_crds():
        install_crd(api, crd)
    resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
    reader = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": ROLE},
              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}  # fmt: skip
    resources.apply(api, reader)
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": NAMESPACE}})
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "alice"}})
    token = core.create_namespaced_service_account_token("alice", NAMESPACE, {"spec": {"expirationSeconds": 7200}})
    username = f"system:serviceaccount:{NAMESPACE}:alice"
    resources.apply(api, {"apiVersion": GV, "kind": "AccessEligibility", "metadata": {"name": "bench"},
                          "spec": {"subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": NAMESPACE}],
                                   "roleRef": {"kind": "ClusterRole", "name": ROLE}, "namespaces": [NAMESPACE],
                                   "maxDuration": "2h", "approvers": [{"kind": "User", "name": "bob"}]}})  # fmt: skip
    return str(token.status.token), username


def drop_jit_validation(api: kubernetes.client.ApiClient) -> None:
    """Remove the JIT ValidatingAdmissionPolicyBindings the operator applied at start (it applies them again only
    when it restarts). They judge the creates of requests and approvals, never a grant or a revocation, and the
    approval policy takes every request of the namespace as a param (0.5-1 ms each, docs/just-in-time-access.md):
    1,000 approvals in one namespace of 1,000 requests would cost ~15 min of API server CPU to set a round up.
    Their cost is tests/cluster/test_access_admission.py's; the creator stamp (mutating) stays."""
    path = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings"
    selector = {"labelSelector": "app.kubernetes.io/component=access-admission"}
    for binding in resources.request(api, "GET", path, query=selector)["items"]:
        resources.delete(api, "admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding",
                         binding["metadata"]["name"])  # fmt: skip
    time.sleep(2.0)  # kube-apiserver reloads policies on a 1 s tick


def create_all(api: kubernetes.client.ApiClient, bodies: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda body: resources.create(api, body), bodies))


def deletion_floor(api: kubernetes.client.ApiClient, watch: BindingWatch, size: int, tag: str) -> list[float]:
    """Lags of `size` RoleBindings the benchmark deletes itself at one whole second, REVOKE_THREADS at a time."""
    names = [f"floor-{tag}-{n}" for n in range(size)]
    create_all(api, [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "metadata": {"name": name, "namespace": NAMESPACE, "labels": {FLOOR_LABEL: tag}},
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": ROLE},
                      "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": NAMESPACE}]}
                     for name in names])  # fmt: skip
    wait_until(lambda: set(names) <= watch.added.keys(), 120, 0.1)
    time.sleep(5.0)  # the operator's re-audit of the new bindings settles, as before an expiry
    due = float(int(time.time()) + 2)
    time.sleep(max(0.0, due - time.time()))
    with ThreadPoolExecutor(REVOKE_THREADS) as pool:
        list(pool.map(lambda name: resources.delete(api, "rbac.authorization.k8s.io/v1", "RoleBinding", name,
                                                    NAMESPACE), names))  # fmt: skip
    wait_until(lambda: set(names) <= watch.deleted.keys(), 120, 0.1)
    return [watch.deleted[name] - due for name in names if name in watch.deleted]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--together", default="100,1000", help="sizes of the expire-together rounds")
    parser.add_argument("--usable", type=int, default=10)
    parser.add_argument("--active", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=20, help="seconds each expire-together grant lasts")
    args = parser.parse_args()

    with ControlPlane() as plane:
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        token, username = prepare(api)
        metrics_port, liveness_port = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.operator_kubeconfig),
            "ACCESS_HYGIENE_METRICS_PORT": str(metrics_port),
        }
        operator = subprocess.Popen(
            [sys.executable, "-m", "access_hygiene.cli.main", "run", "--liveness",
             f"http://127.0.0.1:{liveness_port}/healthz"],
            env=env, stdout=subprocess.DEVNULL, stderr=open("/tmp/jit-benchmark-operator.log", "w"),  # noqa: SIM115
        )  # fmt: skip
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

            def metric_text() -> str:
                try:
                    return urllib.request.urlopen(metrics_url, timeout=5).read().decode()  # type: ignore[no-any-return]
                except OSError:
                    return ""

            if not wait_until(lambda: "access_hygiene_access_requests" in metric_text(), 120, 0.5):
                raise SystemExit("the operator did not start (see /tmp/jit-benchmark-operator.log)")
            time.sleep(3.0)  # let start-up settle (the first audit)
            drop_jit_validation(api)
            print(f"operator RSS idle: {rss_mib(operator.pid):.0f} MiB")
            watch = BindingWatch(api)
            floor_watch = BindingWatch(api, FLOOR_LABEL)
            alice = ControlPlaneClient(plane, token)

            usable = []
            for number in range(args.usable):
                name = f"use-{number}"
                resources.create(api, request_body(name, username, "10m"))
                time.sleep(0.3)  # Pending first, as a person would see it
                started = time.time()
                resources.create(api, approval_body(name))
                if not wait_until(alice.can_list_pods, 10, 0.005):
                    raise SystemExit(f"{name} never became usable")
                usable.append(time.time() - started)
                resources.patch_merge(api, GV, "AccessRequest", name, {"spec": {"revoked": True}}, NAMESPACE)
                wait_until(lambda: not alice.can_list_pods(), 10, 0.01)
            print(f"request -> usable after approval ({args.usable} one after another): "
                  f"p50 {statistics.median(usable) * 1000:.0f} ms, max {max(usable) * 1000:.0f} ms")  # fmt: skip

            for round_number, size in enumerate(int(s) for s in args.together.split(",") if s):
                lead = 15 + size * 0.06  # time to create the requests and approvals before they start
                start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=round(lead))
                names = [f"t{round_number}-{size}-{n}" for n in range(size)]
                created = time.time()
                duration = max(args.duration, round(size * 0.06))  # long enough for every grant to start first
                create_all(api, [request_body(n, username, f"{duration}s", stamp(start)) for n in names])
                create_all(api, [approval_body(n) for n in names])
                print(f"{size} requests + approvals created in {time.time() - created:.1f} s (startAt {stamp(start)})")
                expires = (start + timedelta(seconds=duration)).timestamp()
                bindings = {f"ah-jit-{n}" for n in names}
                wait_until(lambda names=bindings: names <= watch.added.keys(), max(0, expires - time.time()), 0.1)
                rss_active = rss_mib(operator.pid)
                started_ones = bindings & watch.added.keys()  # one that could not start before its expiry never does
                timeout = max(0, expires - time.time()) + 60
                done = wait_until(lambda names=started_ones: names <= watch.deleted.keys(), timeout, 0.1)
                starts = [watch.added[b] - start.timestamp() for b in bindings if b in watch.added]
                lags = [watch.deleted[b] - expires for b in bindings if b in watch.deleted]
                print(f"{size} grants ({duration} s) starting together: {len(started_ones)} started, "
                      f"start lag p50 {percentile(starts, 0.5):.3f} s, p99 {percentile(starts, 0.99):.3f} s, "
                      f"max {max(starts):.3f} s; RSS with them active {rss_active:.0f} MiB")  # fmt: skip
                print(f"{size} grants expiring together: revocation lag p50 {percentile(lags, 0.5):.3f} s, "
                      f"p99 {percentile(lags, 0.99):.3f} s, max {max(lags):.3f} s"
                      + ("" if done else f" ({len(lags)} of {len(started_ones)} deleted in time)"))  # fmt: skip
                floor = deletion_floor(api, floor_watch, size, str(round_number))
                print(f"floor, {size} RoleBindings deleted by the benchmark at one instant ({REVOKE_THREADS} threads): "
                      f"lag p50 {percentile(floor, 0.5):.3f} s, p99 {percentile(floor, 0.99):.3f} s, "
                      f"max {max(floor):.3f} s")  # fmt: skip

            names = [f"active-{n}" for n in range(args.active)]
            create_all(api, [request_body(n, username, "30m") for n in names])
            create_all(api, [approval_body(n) for n in names])
            bindings = {f"ah-jit-{n}" for n in names}
            wait_until(lambda: bindings <= watch.added.keys(), 300, 0.2)
            time.sleep(2.0)
            active_line = next((line for line in metric_text().splitlines()
                                if line.startswith("access_hygiene_access_grants_active{")), "")  # fmt: skip
            print(f"operator RSS with {args.active} active grants: {rss_mib(operator.pid):.0f} MiB ({active_line})")
            for line in metric_text().splitlines():
                if line.startswith(("access_hygiene_access_revocation_lag_seconds_count",
                                    "access_hygiene_access_grants_overdue ")):  # fmt: skip
                    print(f"operator metric: {line}")
            watch.stop()
            floor_watch.stop()
        finally:
            operator.terminate()
            operator.wait(30)
    return 0


class ControlPlaneClient:
    """The requester, as the API server authenticates its ServiceAccount token."""

    def __init__(self, plane: ControlPlane, token: str) -> None:
        path = plane.workdir / "alice.kubeconfig"  # type: ignore[operator]
        path.write_text(plane.render_kubeconfig(token, "alice"))
        self.api = kubernetes.config.new_client_from_config(config_file=str(path))

    def can_list_pods(self) -> bool:
        try:
            resources.request(self.api, "GET", f"/api/v1/namespaces/{NAMESPACE}/pods")
        except kubernetes.client.ApiException as error:
            if error.status == 403:
                return False
            raise
        return True


if __name__ == "__main__":
    raise SystemExit(main())
