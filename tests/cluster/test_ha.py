"""High availability on the real control plane (docs/ha.md): two `access-hygiene run` processes under identities
of their own elect one leader on a Lease (the shipped 15/10/2 s timing). Killing the leader hands over, and a risky
binding created right after the kill reaches the new leader's /metrics from the state its watches kept warm (no
new list); SIGTERM hands over at once (before any expiry could have); a paused leader (SIGSTOP, as a partition
looks to the API server) is replaced and, resumed, writes nothing before it leads again. Every replica serves the
audit webhook: usage the leader alone received is in the new leader's counters after a kill -9, exactly as a single
replica sent the same batches counts it. Over the whole module the API server's audit log shows no write from a
replica that did not hold the Lease when the write arrived."""

import json
import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from access_hygiene.engine.usage.replica import comparable
from tests.cluster.ha import (
    LEASE_DURATION,
    OPERATOR_NAMESPACE,
    RETRY_PERIOD,
    TAKEOVER_HANG_BOUND,
    Replica,
    Webhook,
    advertised_webhook,
    audit_requests,
    ensure_namespace,
    lease_holder,
    make_webhook,
    new_lease_name,
    remove_replica_identity,
    replica_kubeconfig,
    wait_until,
    writes_without_the_lease,
)
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

# Taking a Lease that was not released takes at least this long after the SIGTERM (the standby waits a lease
# duration from the last renewal it saw, at most a retry period before): a takeover sooner came from the release.
RELEASE_TAKEOVER_WITHIN = LEASE_DURATION - RETRY_PERIOD


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Webhook:
    return make_webhook(tmp_path_factory.mktemp("ha-webhook"))


@pytest.fixture(scope="module")
def replicas(
    crd_installed: Cluster, tmp_path_factory: pytest.TempPathFactory, webhook: Webhook
) -> Iterator[list[Replica]]:
    from access_hygiene.k8s import resources
    from access_hygiene.render.grant_ceiling import render_grant_ceiling_role

    workdir = tmp_path_factory.mktemp("ha")
    lease = new_lease_name()
    with crd_installed.api_client() as api:
        resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        ensure_namespace(api, OPERATOR_NAMESPACE)
        made = [replica_kubeconfig(crd_installed.control_plane, api, f"replica-{n}") for n in ("a", "b")]
    started = [
        Replica(f"replica-{n}", user, path, lease, workdir / f"replica-{n}.log", env=dict(webhook.env))
        for n, (path, user) in zip(("a", "b"), made, strict=True)
    ]
    try:
        yield started
    finally:
        for replica in started:
            replica.stop()
        with crd_installed.api_client() as api:
            for name in ("replica-a", "replica-b", "replica-solo"):
                remove_replica_identity(api, name)


def by_identity(replicas: list[Replica], identity: str) -> Replica:
    return next(r for r in replicas if r.name == identity)


def running_pair(cluster: Cluster, replicas: list[Replica]) -> tuple[Replica, Replica]:
    """Both replicas running and synced, one leading: (leader, standby)."""
    for replica in replicas:
        if replica.process is None or replica.process.poll() is not None:
            replica.process = None
            replica.start()
    wait_until(lambda: all(r.synced() for r in replicas), timeout=90, interval=0.2)
    with cluster.api_client() as api:
        wait_until(lambda: lease_holder(api, replicas[0].lease) in {r.name for r in replicas}, timeout=30)
        leader = by_identity(replicas, lease_holder(api, replicas[0].lease))
    standby = next(r for r in replicas if r is not leader)
    wait_until(lambda: leader.gauge("access_hygiene_leader") == 1, timeout=10)
    wait_until(lambda: standby.gauge("access_hygiene_leader") == 0, timeout=10)
    return leader, standby


def risky_binding(api: kubernetes.client.ApiClient, name: str) -> None:
    kubernetes.client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
        {
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci-bot", "namespace": "default"}],
        }
    )


def test_a_standby_exports_only_that_it_does_not_lead_and_writes_nothing(
    cluster: Cluster, replicas: list[Replica]
) -> None:
    leader, standby = running_pair(cluster, replicas)
    standby_metrics = standby.metrics()
    assert standby_metrics is not None
    assert "access_hygiene_violations" not in standby_metrics
    assert "access_hygiene_last_scan_timestamp_seconds" not in standby_metrics
    leader_metrics = leader.metrics()
    assert leader_metrics is not None
    assert "access_hygiene_last_scan_timestamp_seconds" in leader_metrics
    with cluster.api_client() as api:  # work for the leader: a namespace gets its hygiene summary written
        name = f"t-{uuid.uuid4().hex[:8]}"
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
        time.sleep(2)
        kubernetes.client.CoreV1Api(api).delete_namespace(name)


def binding_lists(cluster: Cluster, replica: Replica) -> int:
    """How many times the replica has listed ClusterRoleBindings (each list is a cache filled anew)."""
    requests = audit_requests(cluster.control_plane.audit_log_path, {replica.user})
    return sum(r.verb == "list" and r.resource == "clusterrolebindings" for r in requests)


def test_kill_9_of_the_leader_hands_over_and_the_new_leader_knows_the_latest_binding_from_its_warm_cache(
    cluster: Cluster, replicas: list[Replica]
) -> None:
    """How fast (within the lease; the finding within a second of the takeover) is benchmarks/ha_benchmark.py's to
    measure: here the takeover must come, and the finding from the watch the standby kept, not from a new list."""
    leader, standby = running_pair(cluster, replicas)
    name = f"risky-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        before = standby.gauge("access_hygiene_leader")
        assert before == 0
        # What the leader counts without the new binding (the replicas' own cluster-admin bindings are findings too):
        # the new leader's count must go beyond it, or "> 0" would hold with no binding of ours.
        known = leader.gauge("access_hygiene_violations", rule_id="AH-RBAC-001") or 0
        lists_before = binding_lists(cluster, standby)
        assert lists_before >= 1, "the standby never listed the bindings: the check below would prove nothing"
        leader.signal(signal.SIGKILL)
        killed = time.monotonic()
        risky_binding(api, name)  # seen by the standby's watch before it leads
        try:
            wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=TAKEOVER_HANG_BOUND)
            took_over = time.monotonic() - killed
            wait_until(lambda: standby.gauge("access_hygiene_leader") == 1, timeout=30)
            exported = wait_until(
                lambda: (standby.gauge("access_hygiene_violations", rule_id="AH-RBAC-001") or 0) > known, timeout=30
            )
        finally:
            kubernetes.client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(name)
    assert leader.process is not None
    leader.process.wait()  # reaped: the next pair starts it again
    leader.process = None
    print(f"\nthe standby led {took_over:.2f}s after the kill, exported the finding {exported:.2f}s after that")
    assert binding_lists(cluster, standby) == lists_before, "the new leader listed the bindings again"


def test_sigterm_of_the_leader_releases_the_lease_and_the_standby_leads_at_once(
    cluster: Cluster, replicas: list[Replica]
) -> None:
    leader, standby = running_pair(cluster, replicas)
    with cluster.api_client() as api:
        leader.signal(signal.SIGTERM)
        stopped = time.monotonic()
        wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=TAKEOVER_HANG_BOUND)
        took_over = time.monotonic() - stopped
    assert leader.process is not None
    assert leader.process.wait(timeout=30) == 0
    leader.process = None
    assert took_over < RELEASE_TAKEOVER_WITHIN, f"the standby led {took_over:.2f}s after SIGTERM"


def test_a_paused_leader_is_replaced_and_writes_nothing_when_it_resumes_until_it_leads_again(
    cluster: Cluster, replicas: list[Replica]
) -> None:
    leader, standby = running_pair(cluster, replicas)
    with cluster.api_client() as api:
        leader.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=TAKEOVER_HANG_BOUND)
            name = f"t-{uuid.uuid4().hex[:8]}"  # work the old leader would do if it still believed it led
            kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
            time.sleep(1)
        finally:
            leader.signal(signal.SIGCONT)
        # Resumed: its fence passed while it was stopped; it finds the Lease taken and stands by.
        wait_until(lambda: leader.gauge("access_hygiene_leader") == 0, timeout=10)
        kubernetes.client.CoreV1Api(api).patch_namespace(name, {"metadata": {"labels": {"touched": "yes"}}})
        time.sleep(3)  # time for a wrongful write to show in the audit log (checked when the module ends)
        assert lease_holder(api, leader.lease) == standby.name
        kubernetes.client.CoreV1Api(api).delete_namespace(name)


FOLLOWING = b"Audit usage mirror: following the leader's counters"  # k8s/usage_mirror.py, on a standby


def service_account_batches(cluster: Cluster, api: kubernetes.client.ApiClient) -> tuple[str, list[bytes]]:
    """A ServiceAccount bound to `edit` makes a few requests; their events from the API server's own audit log, as
    the EventLists its webhook backend would post (three events each)."""
    from tests.cluster.test_usage_suggest import bind_edit, sa_token

    namespace, name = "default", f"usage-{uuid.uuid4().hex[:6]}"
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    bind_edit(api, namespace, name)
    username = f"system:serviceaccount:{namespace}:{name}"
    with cluster.client_for_token(sa_token(api, namespace, name), username) as app:
        as_app = kubernetes.client.CoreV1Api(app)
        wait_until(lambda: _allowed(lambda: as_app.list_namespaced_pod(namespace)), timeout=10, interval=0.2)
        as_app.read_namespaced_config_map("kube-root-ca.crt", namespace)
        as_app.create_namespaced_config_map(namespace, {"metadata": {"name": name}})
        as_app.read_namespaced_config_map(name, namespace)
        as_app.delete_namespaced_config_map(name, namespace)
        as_app.list_namespaced_service(namespace)
    log = cluster.control_plane.audit_log_path

    def events() -> list[dict[str, Any]]:
        found = [json.loads(line) for line in log.read_text().splitlines() if f'"{username}"' in line]
        return [e for e in found if e["user"]["username"] == username and e["stage"] == "ResponseComplete"]

    def listed_services() -> bool:
        return any(e["verb"] == "list" and (e.get("objectRef") or {}).get("resource") == "services" for e in events())

    wait_until(listed_services, timeout=10, interval=0.2)
    items = events()
    batches = [
        json.dumps({"apiVersion": "audit.k8s.io/v1", "kind": "EventList", "items": items[i : i + 3]}).encode()
        for i in range(0, len(items), 3)
    ]
    return username, batches


def _allowed(call: Any) -> bool:
    try:
        call()
    except kubernetes.client.ApiException as error:
        if error.status != 403:  # the binding reaches the authorizer's cache a moment later
            raise
        return False
    return True


def single_replica_counters(cluster: Cluster, webhook: Webhook, batches: list[bytes], workdir: Any) -> dict[str, Any]:
    """The counters of one replica (on a Lease of its own, so it leads alone) that received every batch."""
    with cluster.api_client() as api:
        path, user = replica_kubeconfig(cluster.control_plane, api, "replica-solo")
    solo = Replica("replica-solo", user, path, new_lease_name(), workdir / "replica-solo.log", env=dict(webhook.env))
    solo.start()
    try:
        wait_until(lambda: solo.gauge("access_hygiene_leader") == 1, timeout=90, interval=0.2)
        with cluster.api_client() as api:
            url = advertised_webhook(api, solo.lease)
        assert url
        for body in batches:
            assert webhook.post(url, body) == 200
        return webhook.counters(url)
    finally:
        solo.stop()


def test_usage_only_the_leader_received_is_in_the_new_leaders_counters_after_kill_9_and_counted_once(
    cluster: Cluster, replicas: list[Replica], webhook: Webhook, tmp_path: Any
) -> None:
    leader, standby = running_pair(cluster, replicas)
    with cluster.api_client() as api:
        username, batches = service_account_batches(cluster, api)
        wait_until(lambda: standby.logged(FOLLOWING), timeout=30, interval=0.1)
        url = advertised_webhook(api, leader.lease)
        assert url
        first_answered: float | None = None
        for body in batches:  # to the leader only, as kube-apiserver posts them
            assert webhook.post(url, body) == 200
            first_answered = first_answered or time.monotonic()  # the leader had seen the subject by then
        assert first_answered is not None
        leader.signal(signal.SIGKILL)
        wait_until(lambda: lease_holder(api, leader.lease) == standby.name, timeout=TAKEOVER_HANG_BOUND)
        wait_until(lambda: advertised_webhook(api, leader.lease) not in (None, url), timeout=30)
        new_url = advertised_webhook(api, leader.lease)
        assert new_url
        asked = time.monotonic()  # the snapshot is taken after this
        after_takeover = webhook.counters(new_url)
        observed_for = asked - first_answered  # at least: the answer came after the first sighting
    assert leader.process is not None
    leader.process.wait()
    leader.process = None
    single = single_replica_counters(cluster, webhook, batches, tmp_path)
    assert username in comparable(single)["subjects"]
    assert comparable(single)["subjects"][username]["requests"] >= 5
    assert comparable(after_takeover) == comparable(single)  # every request, none twice, no other difference
    first_age = next(s["firstAge"] for s in after_takeover["subjects"] if s["user"] == username)
    # The slack covers only the mirror's own delivery (a standby dates the leader's snapshot on arrival); a window
    # restarted at the takeover would be short by the whole takeover (a lease duration, give or take a retry).
    assert first_age >= observed_for - 1.0, "the observation window restarted at the takeover"


def serving_url(replica: Replica) -> str:
    """The audit webhook address this run of `replica` serves on (its port is the OS's pick)."""
    with replica.log.open("rb") as log:
        log.seek(replica._log_start)
        found = re.search(rb"Audit webhook serving on (https://[0-9.]+:[0-9]+)/audit", log.read())
    assert found, f"{replica.name} does not serve the audit webhook"
    return found.group(1).decode() + "/audit"


def post_until_taken(webhook: Webhook, url: str, body: bytes) -> int:
    """POST as kube-apiserver's webhook backend does: a 503 (a standby that knows no leader yet) is sent again."""
    deadline = time.monotonic() + 30
    while (status := webhook.post(url, body)) == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
    return status


def test_batches_spread_over_both_replicas_as_a_service_would_are_all_counted_once_by_the_leader(
    cluster: Cluster, replicas: list[Replica], webhook: Webhook, tmp_path: Any
) -> None:
    """The chart's Service sends each of kube-apiserver's POSTs to either Pod: a standby relays what it gets to the
    leader, so the leader's counters hold every request once, as a single replica that got every batch counts them."""
    leader, standby = running_pair(cluster, replicas)
    with cluster.api_client() as api:
        username, batches = service_account_batches(cluster, api)
        wait_until(lambda: standby.logged(FOLLOWING), timeout=30, interval=0.1)
        wait_until(lambda: standby.logged(b"Audit webhook serving on"), timeout=30, interval=0.1)
        leader_url = advertised_webhook(api, leader.lease)
        assert leader_url
    standby_url = serving_url(standby)
    assert standby_url != leader_url
    before = comparable(webhook.counters(leader_url))  # (what the module's earlier tests posted stays)
    for number, body in enumerate(batches):
        assert post_until_taken(webhook, standby_url if number % 2 == 0 else leader_url, body) == 200
    assert len(batches) >= 2, "every batch went to the leader: the relay was not exercised"
    after = comparable(webhook.counters(leader_url))
    single = comparable(single_replica_counters(cluster, webhook, batches, tmp_path))
    assert single["subjects"][username]["requests"] >= 5
    assert username not in before["subjects"]
    # Every request, none twice, no other difference, and nothing else touched.
    assert after["subjects"].pop(username) == single["subjects"][username]
    assert after["subjects"] == before["subjects"]
    assert after["recorded"] - before["recorded"] == single["recorded"]


def test_no_write_came_from_a_replica_without_the_lease_and_nothing_failed(
    cluster: Cluster, replicas: list[Replica]
) -> None:
    for replica in replicas:
        replica.stop()
    requests = audit_requests(cluster.control_plane.audit_log_path, {r.user for r in replicas})
    offending = writes_without_the_lease(requests, replicas[0].lease)
    assert offending == [], f"writes from a replica that did not lead: {offending[:10]}"
    written = [r for r in requests if r.verb in ("create", "patch", "update") and r.resource not in ("leases",)]
    assert written, "no write at all: the check above had nothing to judge"
    for replica in replicas:
        log = replica.log.read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]


def test_the_charts_leader_election_role_alone_lets_a_replica_create_renew_watch_and_release_the_lease(
    crd_installed: Cluster,
) -> None:
    """The chart's Role (resourceNames on get/update/watch; create unrestricted) is all the election needs: the
    standby's watch carries fieldSelector=metadata.name, which the API server authorizes as that one name."""
    from scripts.render_chart import find_helm

    from access_hygiene.engine.leadership.lease import LeaseTiming
    from access_hygiene.k8s import resources
    from access_hygiene.k8s.leader import LeaderElector, WriteGate
    from tests.contract.chart import render

    lease = new_lease_name()
    docs = render(find_helm(), "--set", f"leaderElection.leaseName={lease}")
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election"))
    role["metadata"]["name"] = f"elector-{lease}"
    with crd_installed.api_client() as api:
        ensure_namespace(api, OPERATOR_NAMESPACE)
        resources.apply(api, role)
        identity = f"elector-{lease}"
        kubernetes.client.CoreV1Api(api).create_namespaced_service_account(
            OPERATOR_NAMESPACE, {"metadata": {"name": identity}}
        )
        kubernetes.client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            OPERATOR_NAMESPACE,
            {
                "metadata": {"name": identity},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
                "subjects": [{"kind": "ServiceAccount", "name": identity, "namespace": OPERATOR_NAMESPACE}],
            },
        )
        token = (
            kubernetes.client.CoreV1Api(api)
            .create_namespaced_service_account_token(identity, OPERATOR_NAMESPACE, {"spec": {"audiences": []}})
            .status.token
        )
    started: list[str] = []
    with crd_installed.client_for_token(token, f"system:serviceaccount:{OPERATOR_NAMESPACE}:{identity}") as client:
        gate = WriteGate()
        elector = LeaderElector(
            client, gate, OPERATOR_NAMESPACE, lease, identity, LeaseTiming(),
            on_started_leading=lambda: started.append("led"), on_stopped_leading=lambda: None,
        )  # fmt: skip
        assert elector._try_acquire_or_renew()  # create
        assert elector._try_acquire_or_renew()  # update
        assert gate.is_open()
        elector._wait_for_change(1.0)  # the watch: a 403 would make it read the Lease again
        assert elector._observed_once
        elector._transition(True)
        gate.close()
        assert elector.release()
    with crd_installed.api_client() as api:
        assert lease_holder(api, lease) == ""
    assert started == ["led"]
