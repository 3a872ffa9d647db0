"""Two operator Pods from the chart on the local node (docs/ha.md): the operator image imported into the node's
containerd, `helm install` with `replicaCount=2`. Exactly one Pod leads (`access_hygiene_leader` 1 on one Pod's
/metrics, 0 on the other's, and the Lease names it). A `helm upgrade` that changes a pod annotation rolls both Pods
one at a time (RollingUpdate, maxSurge 1, maxUnavailable 0) while both Pods' /metrics are polled every
POLL_SECONDS: the longest stretch with no Pod exporting findings as the leader stays under the takeover bound of
tests/cluster/test_ha.py. Over the module, the API server's audit log shows no write from a Pod that did not hold
the Lease (each Pod's requests carry its name: the kubelet's bound token).

Needs podman, runc and mmdebstrap (the image tier's tools), like test_chart_on_node.py."""

import contextlib
import itertools
import os
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from scripts.render_chart import find_helm

from access_hygiene.clock import parse_instant
from access_hygiene.localcluster.image import build_image, export_image, missing_tools
from access_hygiene.localcluster.node_cluster import (
    NAMESPACE,
    RELEASE,
    SELECTOR,
    chart_dir,
    crashed_operator,
    helm,
    install_chart,
    metrics_url,
    ready_operator_pods,
)
from tests.audit_log import audit_log_events
from tests.cluster.conftest import wait_for
from tests.cluster.ha import (
    KILL_TAKEOVER_WITHIN,
    LEASE_DURATION,
    TAKEOVER_HANG_BOUND,
    WRITE_VERBS,
    Request,
    metric_sum,
    writes_without_the_lease,
)
from tests.node.conftest import NodeCluster

pytestmark = pytest.mark.node

POLL_SECONDS = 0.15
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"  # on requests made with a Pod's bound token
FINDINGS_SERIES = "access_hygiene_last_scan_timestamp_seconds"  # exported by the leader only


@dataclass
class Sample:
    at: float  # monotonic
    leading: list[str] = field(default_factory=list)  # Pods exporting leader 1 and the findings
    answering: int = 0  # Pods whose /metrics answered


def scrape(pod: Any) -> str | None:
    try:
        with urllib.request.urlopen(metrics_url(pod), timeout=1) as response:
            return str(response.read().decode())
    except OSError:
        return None


def leads(text: str | None) -> bool:
    return text is not None and metric_sum(text, "access_hygiene_leader") == 1 and FINDINGS_SERIES in text


def running_pods(core: kubernetes.client.CoreV1Api) -> list[Any]:
    pods: list[Any] = core.list_namespaced_pod(NAMESPACE, label_selector=SELECTOR).items
    return [p for p in pods if p.status.pod_ip and p.status.phase == "Running"]


def lease_holder(api: kubernetes.client.ApiClient) -> str:
    (lease,) = kubernetes.client.CoordinationV1Api(api).list_namespaced_lease(NAMESPACE).items
    return str(lease.spec.holder_identity or "")


@pytest.fixture(scope="module")
def two_pods(node_cluster: NodeCluster) -> Iterator[float]:
    """The chart with two replicas, both Pods Ready; yields when that was (the audit log is read from then)."""
    missing = missing_tools()
    if missing:
        reason = f"the operator image needs {', '.join(missing)} (Debian: apt-get install podman runc mmdebstrap)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)
    image = build_image()
    node_cluster.node.import_image(export_image(image))
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        # The namespace of an earlier module's release may still be terminating.
        wait_for(lambda: NAMESPACE not in {n.metadata.name for n in core.list_namespace().items}, timeout=180)
        installed = time.time()
        install_chart(api, find_helm(), node_cluster.kubeconfig, image.ref, node_cluster.control_plane.api_port,
                      extra=("--set", "replicaCount=2"))  # fmt: skip
        try:
            wait_for(
                lambda: len(ready_operator_pods(core, steady_seconds=5)) == 2 or crashed_operator(core),
                timeout=240,
                interval=0.5,
            )
            assert not crashed_operator(core), crashed_operator(core)
            yield installed
        finally:
            helm(find_helm(), node_cluster.kubeconfig, "uninstall", RELEASE, "--wait")
            core.delete_namespace(NAMESPACE)


def test_exactly_one_of_two_pods_leads_and_the_lease_names_it(node_cluster: NodeCluster, two_pods: float) -> None:
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        pods = ready_operator_pods(core)
        assert len(pods) == 2

        def both_answer_one_leads() -> list[str] | None:
            texts = [scrape(pod) for pod in pods]
            answered = [text for text in texts if text is not None]
            return answered if len(answered) == 2 and sum(map(leads, answered)) == 1 else None

        texts = wait_for(both_answer_one_leads, timeout=30, interval=0.2)
        gauges = [metric_sum(text, "access_hygiene_leader") for text in texts]
        assert sorted(gauges) == [0.0, 1.0], gauges  # type: ignore[type-var]
        leader = pods[gauges.index(1.0)]
        standby_text = texts[gauges.index(0.0)]
        assert FINDINGS_SERIES not in standby_text  # a standby exports no findings (no double count)
        assert lease_holder(api).startswith(f"{leader.metadata.name}_")  # identity: Pod name _ random suffix


def longest_gap(samples: list[Sample]) -> float:
    """The longest time between two consecutive samples in which some Pod exported findings as the leader (from
    the first such sample to the last)."""
    led = [sample.at for sample in samples if sample.leading]
    return max((b - a for a, b in itertools.pairwise(led)), default=float("inf"))


def test_a_rolling_upgrade_keeps_a_leader_exporting_findings(node_cluster: NodeCluster, two_pods: float) -> None:
    samples: list[Sample] = []
    stop = threading.Event()

    def watch_metrics() -> None:
        with node_cluster.api_client() as api:
            core = kubernetes.client.CoreV1Api(api)
            while not stop.is_set():
                started = time.monotonic()
                sample = Sample(at=started)
                try:
                    pods = running_pods(core)
                except (kubernetes.client.ApiException, OSError):
                    pods = []
                for pod in pods:
                    text = scrape(pod)
                    sample.answering += text is not None
                    if leads(text):
                        sample.leading.append(pod.metadata.name)
                samples.append(sample)
                stop.wait(max(0.0, POLL_SECONDS - (time.monotonic() - started)))

    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        before = {p.metadata.uid for p in ready_operator_pods(core)}
        poller = threading.Thread(target=watch_metrics, daemon=True)
        poller.start()
        try:
            time.sleep(2)  # a baseline: the leader exports before the roll
            started = time.monotonic()
            rolled_value = uuid.uuid4().hex[:8]  # --set-string: an all-digit value would be a number to --set
            helm(find_helm(), node_cluster.kubeconfig, "upgrade", RELEASE, str(chart_dir()), "--reuse-values",
                 "--set-string", f"podAnnotations.rolled={rolled_value}", "--wait", "--timeout", "5m")  # fmt: skip
            wait_for(
                lambda: (
                    len(fresh := ready_operator_pods(core, steady_seconds=2)) == 2
                    and not {p.metadata.uid for p in fresh} & before
                    and len(running_pods(core)) == 2
                ),
                timeout=240,
                interval=0.5,
            )
            rolled = time.monotonic() - started
            time.sleep(2)  # and after it
        finally:
            stop.set()
            poller.join(timeout=10)
    during = [s for s in samples if s.at >= started - POLL_SECONDS]
    gap = longest_gap(samples)
    leaders = [s.leading[0] for s in samples if len(s.leading) == 1]
    handovers = sum(a != b for a, b in itertools.pairwise(leaders))
    doubled = [i for i, s in enumerate(samples) if len(s.leading) > 1]
    print(f"\nrolling upgrade of 2 replicas: {rolled:.1f}s, {len(during)} samples every {POLL_SECONDS}s, "
          f"longest gap with no leader exporting findings {gap:.2f}s, leader changes {handovers}, "
          f"samples with two Pods exporting as leader {len(doubled)}")  # fmt: skip
    # The gap is measured between a leader before and after. Any sample of the baseline and of the 2 s after, not the
    # first and last alone: one scrape that misses its 1 s timeout on a loaded node is no missing leader.
    assert any(s.leading for s in samples if s.at < started), "no leader before the roll"
    assert any(s.leading for s in samples if s.at > started + rolled), "no leader after the roll"
    assert handovers >= 1, "the roll never moved the leadership: the old leader's Pod was not replaced"
    assert gap < KILL_TAKEOVER_WITHIN, f"no leader exported findings for {gap:.2f}s during the roll"
    # A scrape of the old leader just before its release and of the new one just after can fall in one sample; two
    # leaders in consecutive samples would mean the old one went on exporting after it handed over.
    assert not any(b == a + 1 for a, b in itertools.pairwise(doubled)), doubled


def test_kill_9_of_the_leader_pod_hands_over_and_the_new_leader_reports_a_binding_made_after_the_kill(
    node_cluster: NodeCluster, two_pods: float
) -> None:
    """SIGKILL from the host to the leader's container (no release): the Lease goes to a new identity once it runs
    out, and the new leader exports a cluster-admin binding created right after the kill. The kubelet restarts the
    killed container in its Pod (PID 1 again, on the same host name): it must not resume its predecessor's term.
    After the rolling upgrade (which needs Pods that never restarted); the audit-log test below then judges the
    restarted container's requests too. The warm-cache takeover itself is tests/cluster/test_ha.py's (here the
    restarted container may, rarely, win the race for the expired Lease)."""
    name = f"ha-node-risky-{uuid.uuid4().hex[:8]}"
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        pods = wait_for(lambda: p if len(p := ready_operator_pods(core)) == 2 else None, timeout=120)
        killed_identity = wait_for(lambda: lease_holder(api) or None, timeout=30)
        (leader,) = [p for p in pods if killed_identity.startswith(f"{p.metadata.name}_")]
        (standby,) = [p for p in pods if p.metadata.uid != leader.metadata.uid]
        leader_text = wait_for(lambda: t if leads(t := scrape(leader)) else None, timeout=30, interval=0.2)
        assert metric_sum(wait_for(lambda: scrape(standby), timeout=30), "access_hygiene_leader") == 0
        # What the leader counts without our binding: the new leader must count more, or "> 0" proves nothing.
        known = metric_sum(leader_text, "access_hygiene_violations", rule_id="AH-RBAC-001") or 0
        pid = node_cluster.node.container_pid(NAMESPACE, leader.metadata.name, leader.spec.containers[0].name)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        kubernetes.client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "ci-bot", "namespace": "default"}],
            }
        )
        try:
            # With host_pid identities the restarted container (PID 1 again) renewed its predecessor's term, and the
            # Lease never changed hands: this wait ran out.
            new_identity = wait_for(
                lambda: h if (h := lease_holder(api)) not in ("", killed_identity) else None,
                timeout=TAKEOVER_HANG_BOUND,
                interval=0.1,
            )
            took_over = time.monotonic() - killed
            (new_leader,) = [p for p in pods if new_identity.startswith(f"{p.metadata.name}_")]

            def reports_the_binding() -> bool:
                text = scrape(new_leader)
                count = metric_sum(text, "access_hygiene_violations", rule_id="AH-RBAC-001") if text else None
                return leads(text) and (count or 0) > known

            wait_for(reports_the_binding, timeout=30, interval=0.1)
            exported = time.monotonic() - killed - took_over
        finally:
            kubernetes.client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(name)
        # Both Pods Ready again, the killed one's container restarted; exactly one of them leads.
        wait_for(lambda: len(ready_operator_pods(core)) == 2, timeout=180, interval=0.5)
        assert lease_holder(api) == new_identity
        texts = [wait_for(lambda pod=pod: scrape(pod), timeout=60) for pod in pods]
        assert sorted(metric_sum(t, "access_hygiene_leader") or 0 for t in texts) == [0.0, 1.0]
    winner = "the standby Pod" if new_leader.metadata.uid == standby.metadata.uid else "the restarted container"
    print(
        f"\nkill -9 of the leader Pod's container: {winner} led {took_over:.2f}s after the kill (lease "
        f"{LEASE_DURATION:.0f}s as shipped) and exported the binding made after the kill {exported:.2f}s later"
    )


def test_a_paused_leader_pod_is_replaced_and_stands_by_when_it_resumes(
    node_cluster: NodeCluster, two_pods: float
) -> None:
    """SIGSTOP from the host to the leading container (a partition: alive but silent): the other Pod takes the Lease
    when it runs out. A namespace created meanwhile is work the paused leader would do if it still believed it led.
    After SIGCONT its fence has long passed: it exports leader 0 and no findings, and the audit-log test below finds
    no write from it. Resumed well before the liveness probe (3 x 20 s) would restart it."""
    name = f"ha-node-paused-{uuid.uuid4().hex[:8]}"
    with node_cluster.api_client() as api:
        core = kubernetes.client.CoreV1Api(api)
        pods = wait_for(lambda: p if len(p := ready_operator_pods(core)) == 2 else None, timeout=180, interval=0.5)
        paused_identity = wait_for(lambda: lease_holder(api) or None, timeout=30)
        (paused,) = [p for p in pods if paused_identity.startswith(f"{p.metadata.name}_")]
        wait_for(lambda: leads(scrape(paused)), timeout=30, interval=0.2)
        pid = node_cluster.node.container_pid(NAMESPACE, paused.metadata.name, paused.spec.containers[0].name)
        os.kill(pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            new_identity = wait_for(
                lambda: h if (h := lease_holder(api)) not in ("", paused_identity) else None,
                timeout=TAKEOVER_HANG_BOUND,
                interval=0.1,
            )
            took_over = time.monotonic() - stopped
            core.create_namespace({"metadata": {"name": name}})
            time.sleep(1)
        finally:
            with contextlib.suppress(ProcessLookupError):  # restarted by its liveness probe on a very slow machine
                os.kill(pid, signal.SIGCONT)
            resumed = time.monotonic()
        try:
            (new_leader,) = [p for p in pods if new_identity.startswith(f"{p.metadata.name}_")]
            wait_for(lambda: leads(scrape(new_leader)), timeout=30, interval=0.2)

            def stands_by() -> bool:
                text = scrape(paused)
                return (
                    text is not None and metric_sum(text, "access_hygiene_leader") == 0 and FINDINGS_SERIES not in text
                )

            wait_for(stands_by, timeout=60, interval=0.2)
            resumed_standing_by = time.monotonic() - resumed
            core.patch_namespace(name, {"metadata": {"labels": {"touched": "yes"}}})
            time.sleep(3)  # time for a wrongful write to reach the audit log (judged when the module ends)
            assert lease_holder(api) == new_identity
        finally:
            core.delete_namespace(name)
        wait_for(lambda: len(ready_operator_pods(core)) == 2, timeout=180, interval=0.5)
    print(
        f"\nSIGSTOP of the leader Pod's container: the other Pod led {took_over:.2f}s later; after SIGCONT the paused "
        f"one exported leader 0 {resumed_standing_by:.2f}s after it"
    )


def pod_requests(audit_log: Path, since: float) -> list[Request]:
    """The operator Pods' requests from the API server's audit log, each under its Pod's name."""
    found = []
    for event in audit_log_events(audit_log):
        if event.get("stage") != "ResponseComplete":
            continue
        pod = ((event["user"].get("extra") or {}).get(POD_NAME_EXTRA) or [""])[0]
        if not pod.startswith(f"{RELEASE}-"):
            continue
        at = parse_instant(event["requestReceivedTimestamp"])
        if at.timestamp() < since:
            continue
        ref = event.get("objectRef") or {}
        found.append(Request(at=at, user=pod, verb=event["verb"], resource=str(ref.get("resource") or ""),
                             namespace=str(ref.get("namespace") or ""), name=str(ref.get("name") or ""),
                             code=int((event.get("responseStatus") or {}).get("code") or 0)))  # fmt: skip
    return sorted(found, key=lambda r: r.at)


def test_no_write_came_from_a_pod_without_the_lease(node_cluster: NodeCluster, two_pods: float) -> None:
    audit_log = node_cluster.control_plane.audit_log_path
    if not audit_log.exists():
        pytest.skip("the node tier's control plane keeps no audit log")
    requests = pod_requests(audit_log, two_pods)
    leases = {r.name for r in requests if r.resource == "leases" and r.namespace == NAMESPACE}
    assert len(leases) == 1, leases
    (lease,) = leases
    offending = writes_without_the_lease(requests, lease)
    assert offending == [], f"writes from a Pod that did not lead: {offending[:10]}"
    writers = {r.user for r in requests if r.verb in WRITE_VERBS and r.resource != "leases"}
    pods = {r.user for r in requests}
    print(f"\naudit log: {len(requests)} requests from {len(pods)} operator Pods, writes from {len(writers)}")
    assert len(pods) >= 3, pods  # two Pods, and the roll's new ones: the check had several to tell apart
    assert writers, "no write at all: the check above had nothing to judge"
