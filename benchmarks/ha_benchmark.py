"""High-availability benchmark (docs/ha.md): failover times of two `access-hygiene run` replicas on a real local
control plane, with the shipped Lease timing (15/10/2 s).

    python benchmarks/ha_benchmark.py [--kills 20] [--handovers 5] [--idle-seconds 60]

- The leader's renewal interval (renewTime on the Lease, polled for 20 s).
- kill -9 of the leader, --kills times: seconds from the kill until the Lease names the standby (p50, max), and
  from that takeover until a cluster-admin binding created right after the kill is in the new leader's /metrics;
  and, on the Lease's times (same machine, same clock), the killed leader's last renewal -> the kill and -> the
  standby's acquireTime. The killed replica is restarted before the next round; the kill waits until that replica
  stands by (it logs that it has seen the holder's record: its count of the term has started) and then 4-6 s more,
  so the standby has watched renewals and the kill falls anywhere in a renewal cycle.
- SIGTERM of the leader, --handovers times: seconds from the signal until the standby holds the Lease.
- The standby while idle: its RSS, and its API requests over --idle-seconds from the API server's audit log
  (by verb: the Lease watch every retry period, no LIST after start, no write).
- With --audit-webhook every replica serves the audit webhook and the standby follows the leader's usage counters
  (docs/ha.md): before each kill one audit batch (a ServiceAccount of its own) is posted to the leader only, and
  after the takeover the new leader's counters must hold it exactly once ("usage batches lost at kill -9").
Not a timed test: figures depend on the machine (state it when quoting them).
"""

import argparse
import itertools
import json
import random
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.cluster.ha import (  # noqa: E402
    OPERATOR_NAMESPACE,
    Replica,
    Webhook,
    advertised_webhook,
    audit_requests,
    ensure_namespace,
    lease_holder,
    make_webhook,
    new_lease_name,
    replica_kubeconfig,
    wait_until,
    writes_without_the_lease,
)
from tests.unit.audit_events import event  # noqa: E402

from access_hygiene.engine.leadership.lease import RETRY_PERIOD_SECONDS  # noqa: E402
from access_hygiene.k8s import resources  # noqa: E402
from access_hygiene.k8s.crds import install_crd  # noqa: E402
from access_hygiene.localcluster import ControlPlane  # noqa: E402
from access_hygiene.models.crd import build_crds  # noqa: E402
from access_hygiene.render.admission_parameters import parameters_crd  # noqa: E402
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role  # noqa: E402


def rss_mib(replica: Replica) -> float:
    assert replica.process is not None
    for line in Path(f"/proc/{replica.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


STANDING_BY = b"Standing by: Lease"  # k8s/leader.py logs it once the standby has seen the holder's record


def logged_since_start(replica: Replica, started_at: dict[str, int], text: bytes) -> bool:
    """`text` in what the replica's current process wrote (its log file is appended across restarts)."""
    with replica.log.open("rb") as log:
        log.seek(started_at.get(replica.name, 0))
        return text in log.read()


def pair(api: kubernetes.client.ApiClient, replicas: list[Replica]) -> tuple[Replica, Replica]:
    """Both replicas running and synced, one leading and the other standing by: it has seen the leader's record,
    so its count of the term has started (a kill before that is not a standby's failover: the count would start
    after the kill)."""
    started_at: dict[str, int] = {}
    for replica in replicas:
        if replica.process is None or replica.process.poll() is not None:
            replica.process = None
            started_at[replica.name] = replica.log.stat().st_size if replica.log.exists() else 0
            replica.start()
    wait_until(
        lambda: all(logged_since_start(r, started_at, b"reacting to events") for r in replicas),
        timeout=120,
        interval=0.2,
    )
    wait_until(lambda: lease_holder(api, replicas[0].lease) in {r.name for r in replicas}, timeout=30)
    leader = next(r for r in replicas if r.name == lease_holder(api, r.lease))
    standby = next(r for r in replicas if r is not leader)
    wait_until(lambda: logged_since_start(standby, started_at, STANDING_BY), timeout=30, interval=0.05)
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


FOLLOWING = b"Audit usage mirror: following the leader's counters"  # k8s/usage_mirror.py


def idle_round(
    api: kubernetes.client.ApiClient, replicas: list[Replica], audit_log: Path, seconds: float, mirror: bool
) -> dict:
    leader, standby = pair(api, replicas)
    if mirror:  # idle with the mirror connection open
        wait_until(lambda: standby.logged(FOLLOWING), timeout=30, interval=0.1)
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


def lease_spec(api: kubernetes.client.ApiClient, lease: str) -> Any:
    return kubernetes.client.CoordinationV1Api(api).read_namespaced_lease(lease, OPERATOR_NAMESPACE).spec


def renewal_intervals(api: kubernetes.client.ApiClient, lease: str, seconds: float) -> list[float]:
    """Seconds between the holder's successive renewTimes, polled for `seconds`."""
    renewals: list[datetime] = []
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        renewed = lease_spec(api, lease).renew_time
        if not renewals or renewed != renewals[-1]:
            renewals.append(renewed)
        time.sleep(0.05)
    return [(b - a).total_seconds() for a, b in itertools.pairwise(renewals)]


def usage_batch(user: str) -> bytes:
    items = [event("get", "configmaps", name="settings", user=user), event("list", "pods", user=user)]
    return json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": items}).encode()


def kill_round(
    api: kubernetes.client.ApiClient, replicas: list[Replica], webhook: Webhook | None = None
) -> tuple[float, float, float, float, int]:
    """(kill -> takeover, takeover -> the binding created after the kill in the new leader's /metrics,
    the killed leader's last renewal -> kill, that renewal -> the standby's acquireTime, usage batches lost: posted
    to the killed leader and answered 200 but not exactly once in the new leader's counters). Wall times on the
    Lease and the kill come from the same machine's clock."""
    leader, standby = pair(api, replicas)
    # A steady standby: it has seen renewals through its watch, and the kill falls anywhere in a renewal cycle.
    time.sleep(random.uniform(2 * RETRY_PERIOD_SECONDS, 3 * RETRY_PERIOD_SECONDS))
    user = f"system:serviceaccount:bench:kill-{uuid.uuid4().hex[:8]}"
    if webhook is not None:
        url = advertised_webhook(api, leader.lease)
        assert url
        assert webhook.post(url, usage_batch(user)) == 200
    name = f"risky-{uuid.uuid4().hex[:8]}"
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    killed_wall = datetime.now(UTC)
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench", "namespace": "default"}],
        }
    )
    last_renewal: datetime | None = None

    def taken() -> bool:
        nonlocal last_renewal
        spec = lease_spec(api, leader.lease)
        if spec.holder_identity == leader.name:
            last_renewal = spec.renew_time  # a renewal in flight at the kill may land after it
            return False
        return bool(spec.holder_identity == standby.name)

    wait_until(taken, timeout=40, interval=0.01)
    took_over = time.monotonic()
    acquired = lease_spec(api, leader.lease).acquire_time
    assert last_renewal is not None
    wait_until(
        lambda: (standby.gauge("access_hygiene_violations", rule_id="AH-RBAC-001") or 0) > 0, timeout=30, interval=0.01
    )
    exported = time.monotonic()
    lost = 0
    if webhook is not None:
        wait_until(lambda: advertised_webhook(api, leader.lease) not in (None, url), timeout=10)
        counters = webhook.counters(str(advertised_webhook(api, leader.lease)))
        kept = [s for s in counters["subjects"] if s["user"] == user]
        lost = 0 if len(kept) == 1 and kept[0]["requests"] == 2 else 1
    assert leader.process is not None
    leader.process.wait()
    leader.process = None
    rbac.delete_cluster_role_binding(name)
    return (
        took_over - killed,
        exported - took_over,
        (killed_wall - last_renewal).total_seconds(),
        (acquired - last_renewal).total_seconds(),
        lost,
    )


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
    parser.add_argument("--audit-webhook", action="store_true", help="replicas serve the audit webhook (mirror)")
    args = parser.parse_args()
    results: list[dict] = []
    with (
        ControlPlane(audit_log=True) as control_plane,
        kubernetes.config.new_client_from_config(config_file=str(control_plane.kubeconfig)) as api,
    ):
        # Every CRD of ours, as the chart installs them: a watched kind whose CRD is missing is looked for again
        # every few seconds (a LIST), which is not what a standby at rest does on an installed cluster.
        for crd in (*build_crds(), parameters_crd()):
            install_crd(api, crd)
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        ensure_namespace(api, OPERATOR_NAMESPACE)
        workdir = Path(str(control_plane.workdir))
        lease = new_lease_name()
        webhook = make_webhook(workdir / "webhook") if args.audit_webhook else None
        replicas = []
        for name in ("a", "b"):
            path, user = replica_kubeconfig(control_plane, api, f"replica-{name}")
            env = dict(webhook.env) if webhook is not None else {}
            replicas.append(Replica(f"replica-{name}", user, path, lease, workdir / f"replica-{name}.log", env=env))
        try:
            results.append(
                idle_round(api, replicas, control_plane.audit_log_path, args.idle_seconds, webhook is not None)
            )
            pair(api, replicas)
            results.append(summary("leader: between renewals (s)", renewal_intervals(api, lease, 20.0)))
            rounds = [kill_round(api, replicas, webhook) for _ in range(args.kills)]
            results.append(summary("kill -9 -> standby holds the Lease (s)", [r[0] for r in rounds]))
            results.append(summary("takeover -> binding in the new leader's /metrics (s)", [r[1] for r in rounds]))
            results.append(summary("killed leader's last renewal -> kill (s)", [r[2] for r in rounds]))
            results.append(summary("killed leader's last renewal -> standby's acquireTime (s)", [r[3] for r in rounds]))
            if webhook is not None:
                results.append({"what": "usage batches lost at kill -9", "lost": sum(r[4] for r in rounds),
                                 "of": len(rounds)})  # fmt: skip
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
