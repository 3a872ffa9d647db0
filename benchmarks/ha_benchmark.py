"""High-availability benchmark (docs/ha.md): failover times of two `access-hygiene run` replicas on a real local
control plane, with the shipped Lease timing (15/10/2 s).

    python benchmarks/ha_benchmark.py [--kills 20] [--handovers 5] [--idle-seconds 60]

- kill -9 of the leader, --kills times: seconds from the kill until the Lease names the standby (p50, max), and
  from that takeover until a cluster-admin binding created right after the kill is in the new leader's /metrics.
  The killed replica is restarted (it becomes the standby) before the next round.
- SIGTERM of the leader, --handovers times: seconds from the signal until the standby holds the Lease.
- The standby while idle: its RSS, and its API requests over --idle-seconds from the API server's audit log
  (by verb: the Lease watch every retry period, no LIST after start, no write).
Not a timed test: figures depend on the machine (state it when quoting them).
"""

import argparse
import json
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.cluster.ha import (  # noqa: E402
    OPERATOR_NAMESPACE,
    Replica,
    audit_requests,
    ensure_namespace,
    lease_holder,
    new_lease_name,
    replica_kubeconfig,
    wait_until,
    writes_without_the_lease,
)

from access_hygiene.k8s import resources  # noqa: E402
from access_hygiene.k8s.crds import install_crd  # noqa: E402
from access_hygiene.localcluster import ControlPlane  # noqa: E402
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role  # noqa: E402

CRD = ROOT / "crds" / "accesspolicies.accesshygiene.io.yaml"


def rss_mib(replica: Replica) -> float:
    assert replica.process is not None
    for line in Path(f"/proc/{replica.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pair(api: kubernetes.client.ApiClient, replicas: list[Replica]) -> tuple[Replica, Replica]:
    for replica in replicas:
        if replica.process is None or replica.process.poll() is not None:
            replica.process = None
            replica.start()
    wait_until(lambda: all(r.synced() for r in replicas), timeout=120, interval=0.2)
    wait_until(lambda: lease_holder(api, replicas[0].lease) in {r.name for r in replicas}, timeout=30)
    leader = next(r for r in replicas if r.name == lease_holder(api, r.lease))
    standby = next(r for r in replicas if r is not leader)
    wait_until(lambda: standby.gauge("access_hygiene_leader") == 0, timeout=30)
    return leader, standby


def summary(name: str, values: list[float]) -> dict[str, float | int | str]:
    return {
        "what": name,
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
        "min": round(min(values), 3),
    }


def idle_round(api: kubernetes.client.ApiClient, replicas: list[Replica], audit_log: Path, seconds: float) -> dict:
    leader, standby = pair(api, replicas)
    time.sleep(10)  # start-up settles (first reports, first Events)
    since = datetime.now(UTC)
    time.sleep(seconds)
    until = datetime.now(UTC)
    idle = [r for r in audit_requests(audit_log, {standby.user}) if since <= r.at < until]
    return {
        "what": "standby idle",
        "seconds": seconds,
        "standby_rss_mib": round(rss_mib(standby), 1),
        "leader_rss_mib": round(rss_mib(leader), 1),
        "standby_requests": dict(Counter(f"{r.verb} {r.resource}" for r in idle)),
    }


def kill_round(api: kubernetes.client.ApiClient, replicas: list[Replica]) -> tuple[float, float]:
    """(kill -> takeover, takeover -> the binding created after the kill in the new leader's /metrics)."""
    leader, standby = pair(api, replicas)
    name = f"risky-{uuid.uuid4().hex[:8]}"
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "default"}],
        }
    )
    wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=40, interval=0.01)
    took_over = time.monotonic()
    wait_until(
        lambda: (standby.gauge("access_hygiene_violations", rule_id="AH-RBAC-001") or 0) > 0, timeout=30, interval=0.01
    )
    exported = time.monotonic()
    assert leader.process is not None
    leader.process.wait()
    leader.process = None
    rbac.delete_cluster_role_binding(name)
    return took_over - killed, exported - took_over


def sigterm_round(api: kubernetes.client.ApiClient, replicas: list[Replica]) -> float:
    leader, standby = pair(api, replicas)
    leader.signal(signal.SIGTERM)
    stopped = time.monotonic()
    wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=40, interval=0.01)
    took = time.monotonic() - stopped
    assert leader.process is not None
    leader.process.wait(timeout=30)
    leader.process = None
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--handovers", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    results: list[dict] = []
    with (
        ControlPlane(audit_log=True) as control_plane,
        kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as api,
    ):
        install_crd(api, yaml.safe_load(CRD.read_text()))
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        ensure_namespace(api, OPERATOR_NAMESPACE)
        workdir = Path(str(control_plane.workdir))
        lease = new_lease_name()
        replicas = []
        for name in ("a", "b"):
            path, user = replica_kubeconfig(control_plane, api, f"replica-{name}")
            replicas.append(Replica(f"replica-{name}", user, path, lease, workdir / f"replica-{name}.log"))
        try:
            results.append(idle_round(api, replicas, control_plane.audit_log_path, args.idle_seconds))
            rounds = [kill_round(api, replicas) for _ in range(args.kills)]
            results.append(summary("kill -9 -> standby holds the Lease (s)", [r[0] for r in rounds]))
            results.append(summary("takeover -> binding in the new leader's /metrics (s)", [r[1] for r in rounds]))
            handovers = [sigterm_round(api, replicas) for _ in range(args.handovers)]
            results.append(summary("SIGTERM -> standby holds the Lease (s)", handovers))
        finally:
            for replica in replicas:
                replica.stop()
        requests = audit_requests(control_plane.audit_log_path, {r.user for r in replicas})
        results.append(
            {"what": "writes from a replica without the Lease", "count": len(writes_without_the_lease(requests, lease))}
        )
    for result in results:
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
