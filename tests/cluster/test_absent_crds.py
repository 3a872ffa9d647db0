"""Our own CRDs absent at start (AccessPolicy and the just-in-time kinds): the operator LISTs each kind once, finds it
not served, and then watches its CustomResourceDefinition by name instead of LISTing the kind again every few
seconds; once the CRD is installed the kind is read and its objects reconciled. On a control plane of the module's
own: the shared one has every CRD installed."""

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime

import kubernetes
import pytest
import yaml

from access_hygiene.k8s import resources
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import OPERATOR_USER
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from tests.audit_log import audit_log_events
from tests.cluster.conftest import OPERATOR_ENV, captured_log, running_operator, wait_for
from tests.conftest import CRD_PATH, Cluster

pytestmark = pytest.mark.cluster

GROUP = "accesshygiene.io"
OUR_KINDS = ("accesspolicies", "accesseligibilities", "accessrequests", "accessapprovals")
# The old reflector LISTed an absent kind every 5-10 s: at least two more LISTs of each in this window.
IDLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def crdless_cluster() -> Iterator[Cluster]:
    with ControlPlane(audit_log=True) as control_plane:
        cluster = Cluster(control_plane)
        with cluster.api_client() as api:
            resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        yield cluster


def operator_requests(cluster: Cluster, since: float) -> list[tuple[str, str, str]]:
    """(verb, resource, request URI) of the operator's requests on our kinds and on CRDs after `since` (a watch is
    logged when it starts: it completes only when it ends)."""
    found = []
    for event in audit_log_events(cluster.control_plane.audit_log_path):
        ref = event.get("objectRef") or {}
        watch = event.get("verb") == "watch"
        if event.get("stage") != ("ResponseStarted" if watch else "ResponseComplete"):
            continue
        if event["user"]["username"] != OPERATOR_USER:
            continue
        if ref.get("apiGroup") != GROUP and ref.get("resource") != "customresourcedefinitions":
            continue
        if datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since:
            found.append((event["verb"], str(ref.get("resource")), event.get("requestURI", "")))
    return found


def test_an_absent_kind_is_listed_once_then_its_crd_watched_until_installed(crdless_cluster: Cluster) -> None:
    namespace = f"crd-{uuid.uuid4().hex[:8]}"
    started = time.time()
    env = {**OPERATOR_ENV, "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "3600"}
    with captured_log() as log, running_operator(crdless_cluster.control_plane.operator_kubeconfig, env):
        wait_for(lambda: any("reacting to events" in line for line in log.lines()), timeout=60)
        time.sleep(IDLE_SECONDS)
        requests = operator_requests(crdless_cluster, started)
        lists = Counter(resource for verb, resource, _ in requests if verb == "list" and resource in OUR_KINDS)
        assert lists == Counter(dict.fromkeys(OUR_KINDS, 1)), requests
        for kind in OUR_KINDS:
            assert any(verb == "watch" and f"metadata.name%3D{kind}.{GROUP}" in uri for verb, _, uri in requests), (
                requests
            )

        with crdless_cluster.api_client() as api:
            from access_hygiene.k8s.crds import install_crd

            installed = time.monotonic()
            install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
            wait_for(lambda: any("AccessPolicy is served" in line for line in log.lines()), timeout=30, interval=0.1)
            kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
            custom = kubernetes.client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object(GROUP, "v1alpha1", namespace, "accesspolicies", {
                "apiVersion": f"{GROUP}/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "app"},
                "spec": {"rbac": {"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}},
            })  # fmt: skip

            def ready() -> bool:
                policy = custom.get_namespaced_custom_object(GROUP, "v1alpha1", namespace, "accesspolicies", "app")
                conditions = (policy.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            wait_for(ready, timeout=30, interval=0.2)
            print(f"policy Ready {time.monotonic() - installed:.1f}s after its CRD was installed")
    assert not [line for line in log.lines() if "[traceback]" in line or "ERROR" in line], log.lines()
