"""The event-driven core on the real control plane: findings, Events and repairs follow watch events within
seconds, with the drift timer set to an hour so nothing here can be the timer's doing."""

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kopf.testing import KopfRunner

from access_hygiene.localcluster.controlplane import OPERATOR_USER, free_port
from tests.cluster.conftest import OPERATOR_ENV, wait_for
from tests.cluster.test_policy_operator import API_READER, create_policy, wait_condition
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

METRICS_PORT = free_port()
# A generous bound for a noisy 2-core machine; benchmarks/live_scale.py reports the real latencies.
WITHIN_SECONDS = 2.0


@pytest.fixture(scope="module")
def operator_env() -> dict[str, str]:
    return {
        **OPERATOR_ENV,
        "ACCESS_HYGIENE_MODE": "enforce",
        "ACCESS_HYGIENE_METRICS_PORT": str(METRICS_PORT),
        "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
        "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "3600",
    }


def violations(rule_id: str) -> float:
    """Sum of access_hygiene_violations series of one rule, from the live /metrics endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("access_hygiene_violations{") and f'rule_id="{rule_id}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def metrics_answer() -> bool:
    try:
        violations("AH-RBAC-001")
    except OSError:  # not listening yet: the operator is still starting
        return False
    return True


def warning_events(api: kubernetes.client.ApiClient, namespace: str, kind: str, name: str) -> list[Any]:
    events = kubernetes.client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
    )
    return [e for e in events.items if e.type == "Warning" and e.reason == "AccessHygieneViolation"]


@pytest.fixture
def cluster_admin_binding(cluster: Cluster, namespace: str) -> Iterator[str]:
    name = f"risky-{uuid.uuid4().hex[:8]}"
    yield name
    with cluster.api_client() as api:
        try:
            kubernetes.client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(name)
        except kubernetes.client.ApiException as error:
            if error.status != 404:
                raise


def test_cluster_admin_binding_shows_in_metrics_and_as_event_within_seconds(
    operator: KopfRunner, cluster: Cluster, namespace: str, cluster_admin_binding: str
) -> None:
    wait_for(metrics_answer, timeout=30)
    before = violations("AH-RBAC-001")
    with cluster.api_client() as api:
        started = time.monotonic()
        kubernetes.client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
            {
                "metadata": {"name": cluster_admin_binding},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "ci-bot", "namespace": namespace}],
            }
        )
        wait_for(lambda: violations("AH-RBAC-001") > before, timeout=10, interval=0.05)
        in_metrics = time.monotonic() - started
        events = wait_for(
            lambda: warning_events(api, "default", "ClusterRoleBinding", cluster_admin_binding),
            timeout=10,
            interval=0.05,
        )
        as_event = time.monotonic() - started
        assert "AH-RBAC-001" in events[0].message
        assert events[0].source.component == "access-hygiene"
        assert in_metrics < WITHIN_SECONDS, f"finding reached /metrics after {in_metrics:.2f}s"
        assert as_event < WITHIN_SECONDS, f"Warning Event posted after {as_event:.2f}s"

        # No duplicate Event for an unchanged finding: relabelling the binding does not re-announce it.
        kubernetes.client.RbacAuthorizationV1Api(api).patch_cluster_role_binding(
            cluster_admin_binding, {"metadata": {"labels": {"touched": "yes"}}}
        )
        time.sleep(1.5)
        assert len(warning_events(api, "default", "ClusterRoleBinding", cluster_admin_binding)) == 1

        kubernetes.client.RbacAuthorizationV1Api(api).delete_cluster_role_binding(cluster_admin_binding)
        wait_for(lambda: violations("AH-RBAC-001") == before, timeout=10, interval=0.05)


def test_deleted_generated_rolebinding_is_repaired_within_seconds(
    operator: KopfRunner, cluster: Cluster, namespace: str
) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "orders-api", API_READER)
        wait_condition(api, namespace, "orders-api", "True", "Reconciled")
        rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        (binding,) = rbac.list_namespaced_role_binding(
            namespace, label_selector="accesshygiene.io/policy=orders-api"
        ).items
        old_uid = binding.metadata.uid
        started = time.monotonic()
        rbac.delete_namespaced_role_binding(binding.metadata.name, namespace)

        def recreated() -> bool:
            try:
                again = rbac.read_namespaced_role_binding(binding.metadata.name, namespace)
            except kubernetes.client.ApiException as error:
                if error.status == 404:
                    return False
                raise
            return bool(again.metadata.uid != old_uid)

        wait_for(recreated, timeout=10, interval=0.05)
        repaired = time.monotonic() - started
        assert repaired < WITHIN_SECONDS, f"RoleBinding repaired after {repaired:.2f}s"


def test_idle_operator_makes_no_list_and_no_write(operator: KopfRunner, cluster: Cluster, namespace: str) -> None:
    with cluster.api_client() as api:
        create_policy(api, namespace, "idle-check", {**API_READER})
        wait_condition(api, namespace, "idle-check", "True", "Reconciled")
    time.sleep(3)  # let the reconcile's own echoes settle
    since = time.time()
    time.sleep(8)
    requests = operator_requests(cluster, since)
    assert [r for r in requests if r["verb"] == "list"] == [], "the operator polled while idle"
    # Earlier tests' namespaces may still be finishing their deletion; this namespace is settled.
    writes = [r for r in requests if r["verb"] in ("create", "update", "patch", "delete")]
    assert [w for w in writes if w.get("namespace") in (namespace, None)] == []


def operator_requests(cluster: Cluster, since: float) -> list[dict[str, Any]]:
    found = []
    for line in cluster.control_plane.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
            continue
        stamp = event["requestReceivedTimestamp"]
        when = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        if when >= since:
            found.append({"verb": event["verb"], **(event.get("objectRef") or {})})
    return found
