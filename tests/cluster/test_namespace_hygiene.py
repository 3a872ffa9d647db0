"""Namespace hygiene against the real control plane: automount off, default deny + DNS, exemptions."""

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import kubernetes
import pytest
from kopf.testing import KopfRunner

from tests.cluster.conftest import operator_writes, wait_for
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster
DEFAULT_DENY = "access-hygiene-default-deny"
DNS_ALLOW = "access-hygiene-allow-dns"


@pytest.fixture
def make_namespace(cluster: Cluster) -> Iterator:  # type: ignore[type-arg]
    created: list[str] = []

    def make(labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None) -> str:
        name = f"h-{uuid.uuid4().hex[:10]}"
        with cluster.api_client() as api:
            kubernetes.client.CoreV1Api(api).create_namespace(
                {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}}}
            )
        created.append(name)
        return name

    yield make
    with cluster.api_client() as api:
        for name in created:
            kubernetes.client.CoreV1Api(api).delete_namespace(name)


def default_sa_exists(api: kubernetes.client.ApiClient, namespace: str) -> bool:
    names = [
        sa.metadata.name for sa in kubernetes.client.CoreV1Api(api).list_namespaced_service_account(namespace).items
    ]
    return "default" in names


def automount(api: kubernetes.client.ApiClient, namespace: str) -> bool | None:
    try:
        value = kubernetes.client.CoreV1Api(api).read_namespaced_service_account("default", namespace)
    except kubernetes.client.ApiException:
        return None
    result: bool | None = value.automount_service_account_token
    return result


def policy_names(api: kubernetes.client.ApiClient, namespace: str) -> set[str]:
    items = kubernetes.client.NetworkingV1Api(api).list_namespaced_network_policy(namespace).items
    return {p.metadata.name for p in items}


ENFORCE = {"accesshygiene.io/mode": "enforce"}


def test_new_namespace_is_fixed_within_seconds(operator: KopfRunner, cluster: Cluster, make_namespace) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    namespace = make_namespace(labels=ENFORCE)
    with cluster.api_client() as api:
        wait_for(lambda: automount(api, namespace) is False, timeout=20)
        wait_for(lambda: {DEFAULT_DENY, DNS_ALLOW} <= policy_names(api, namespace), timeout=20)
        elapsed = time.monotonic() - started
        deny = kubernetes.client.NetworkingV1Api(api).read_namespaced_network_policy(DEFAULT_DENY, namespace)
        assert sorted(deny.spec.policy_types) == ["Egress", "Ingress"]
        assert deny.spec.pod_selector.match_labels is None  # selects every pod
        dns = kubernetes.client.NetworkingV1Api(api).read_namespaced_network_policy(DNS_ALLOW, namespace)
        ports = {(p.protocol, p.port) for rule in dns.spec.egress for p in rule.ports}
        assert ports == {("UDP", 53), ("TCP", 53)}
        summary = wait_for(lambda: kubernetes.client.CoreV1Api(api).read_namespace(namespace).metadata.annotations)
        assert "accesshygiene.io/hygiene-summary" in summary
    print(f"namespace hygiene applied in {elapsed:.1f}s")


def test_flipping_automount_back_is_repaired(operator: KopfRunner, cluster: Cluster, make_namespace) -> None:  # type: ignore[no-untyped-def]
    namespace = make_namespace(labels=ENFORCE)
    with cluster.api_client() as api:
        wait_for(lambda: automount(api, namespace) is False, timeout=20)
        kubernetes.client.CoreV1Api(api).patch_namespaced_service_account(
            "default", namespace, {"automountServiceAccountToken": True}
        )
        wait_for(lambda: automount(api, namespace) is False, timeout=20)


def test_user_network_policies_are_never_touched(operator: KopfRunner, cluster: Cluster, make_namespace) -> None:  # type: ignore[no-untyped-def]
    namespace = make_namespace(labels=ENFORCE)
    user_policy = {
        "metadata": {"name": "team-allow-web", "labels": {"team": "web"}},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{}], "policyTypes": ["Ingress"]},
    }
    with cluster.api_client() as api:
        networking = kubernetes.client.NetworkingV1Api(api)
        created = networking.create_namespaced_network_policy(namespace, user_policy)
        wait_for(lambda: {DEFAULT_DENY, DNS_ALLOW} <= policy_names(api, namespace), timeout=20)
        time.sleep(3)  # drift timer ticks
        live = networking.read_namespaced_network_policy("team-allow-web", namespace)
        assert live.metadata.resource_version == created.metadata.resource_version
        assert live.metadata.labels == {"team": "web"}


def test_exempt_namespace_is_untouched(operator: KopfRunner, cluster: Cluster, make_namespace) -> None:  # type: ignore[no-untyped-def]
    until = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = make_namespace(
        labels=ENFORCE,
        annotations={
            "accesshygiene.io/exempt": "*",
            "accesshygiene.io/exempt-owner": "platform-team",
            "accesshygiene.io/exempt-reason": "legacy batch system, migration ticket PLAT-42",
            "accesshygiene.io/exempt-until": until,
        },
    )
    with cluster.api_client() as api:
        wait_for(lambda: default_sa_exists(api, namespace))
        time.sleep(4)
        assert automount(api, namespace) is None  # untouched: the field was never set
        assert not ({DEFAULT_DENY, DNS_ALLOW} & policy_names(api, namespace))


def test_expired_exemption_stops_applying(operator: KopfRunner, cluster: Cluster, make_namespace) -> None:  # type: ignore[no-untyped-def]
    soon = (datetime.now(UTC) + timedelta(seconds=6)).replace(microsecond=0)  # the annotation has whole seconds
    namespace = make_namespace(
        labels=ENFORCE,
        annotations={
            "accesshygiene.io/exempt": "*",
            "accesshygiene.io/exempt-owner": "platform-team",
            "accesshygiene.io/exempt-reason": "short test exemption",
            "accesshygiene.io/exempt-until": soon.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )
    with cluster.api_client() as api:
        # At expiry the operator re-audits the namespace (scheduled for that instant) and enforces.
        wait_for(lambda: automount(api, namespace) is False, timeout=30)
        wait_for(lambda: {DEFAULT_DENY, DNS_ALLOW} <= policy_names(api, namespace), timeout=20)
    # Untouched until then, by the API server's own clock: a read of the account "before the expiry" would race
    # kube-controller-manager creating it (seconds, on a loaded machine) against the 6 s exemption.
    controls = ("serviceaccounts", "networkpolicies")
    early = operator_writes(cluster, 0.0, namespace, until=soon.timestamp())
    assert [w for w in early if w.get("resource") in controls] == []


def test_audit_mode_namespace_writes_nothing_but_the_summary(
    operator: KopfRunner, cluster: Cluster, make_namespace
) -> None:  # type: ignore[no-untyped-def]
    started = time.time()
    namespace = make_namespace(labels={"accesshygiene.io/mode": "audit"})
    with cluster.api_client() as api:
        wait_for(lambda: default_sa_exists(api, namespace))
        wait_for(lambda: kubernetes.client.CoreV1Api(api).read_namespace(namespace).metadata.annotations)
        time.sleep(4)
        assert automount(api, namespace) is None
        assert policy_names(api, namespace) == set()
    # The summary annotation, and the namespace's policy report (findings are an output in both modes).
    writes = [w for w in operator_writes(cluster, started, namespace) if w.get("apiGroup") != "openreports.io"]
    assert all(w.get("resource") == "namespaces" and w["verb"] == "patch" for w in writes), writes
