"""The OpenReports CRDs absent at start: the operator reads no report kind (it watches the two CRDs by name), and
writes reports once the CRDs are installed; removed again, it stops. On a control plane of the module's own: the
shared one has the report CRDs from test_reports.py."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import kubernetes
import pytest
import yaml

from access_hygiene.k8s import resources
from access_hygiene.k8s.reports import REPORT_CRD_NAMES, install_report_crds
from access_hygiene.localcluster import ControlPlane
from access_hygiene.localcluster.controlplane import OPERATOR_USER
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from tests.cluster.conftest import OPERATOR_ENV, captured_log, running_operator, wait_for
from tests.cluster.test_reports import CRD_FILES, GROUP, VERSION
from tests.conftest import CRD_PATH, Cluster

pytestmark = pytest.mark.cluster

# Longer than the old writer's 2 s retry pace; its recheck of a missing CRD was every 300 s, but its first LIST came
# at start, inside this window.
IDLE_SECONDS = 20.0


@pytest.fixture(scope="module")
def bare_cluster() -> Iterator[Cluster]:
    from access_hygiene.k8s.crds import install_crd

    with ControlPlane(audit_log=True) as control_plane:
        cluster = Cluster(control_plane)
        with cluster.api_client() as api:
            install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
            resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        yield cluster


def report_requests(cluster: Cluster, since: float) -> list[str]:
    """The operator's requests ("verb resource") on openreports.io kinds after `since`, from the audit log."""
    found = []
    for line in cluster.control_plane.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("stage") != "ResponseComplete" or event["user"]["username"] != OPERATOR_USER:
            continue
        if ref.get("apiGroup") != GROUP:
            continue
        if datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since:
            found.append(f"{event['verb']} {ref.get('resource')}")
    return found


def crd_requests(cluster: Cluster, since: float) -> list[dict[str, Any]]:
    """The operator's requests on CustomResourceDefinitions after `since`: verb and URI (a watch is logged when it
    starts, ResponseStarted: it completes only when it ends)."""
    found = []
    for line in cluster.control_plane.audit_log_path.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event.get("stage") not in ("ResponseStarted", "ResponseComplete"):
            continue
        if event["user"]["username"] != OPERATOR_USER:
            continue
        if ref.get("resource") != "customresourcedefinitions":
            continue
        if datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since:
            found.append({"verb": event["verb"], "uri": event.get("requestURI", "")})
    return found


def risky_binding(api: kubernetes.client.ApiClient, namespace: str) -> None:
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": namespace}})
    rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "ci-is-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": namespace}]})  # fmt: skip


def live_report(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, Any] | None:
    try:
        return dict(
            kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, "reports", "access-hygiene"
            )
        )
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def test_no_report_kind_is_read_until_its_crds_are_installed(bare_cluster: Cluster) -> None:
    namespace = f"crd-{uuid.uuid4().hex[:8]}"
    with bare_cluster.api_client() as api:
        risky_binding(api, namespace)
    started = time.time()
    env = {**OPERATOR_ENV, "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "3600"}
    with captured_log() as log, running_operator(bare_cluster.control_plane.operator_kubeconfig, env):
        wait_for(lambda: any("reacting to events" in line for line in log.lines()), timeout=60)
        time.sleep(IDLE_SECONDS)
        assert report_requests(bare_cluster, started) == []
        assert any("are not installed; reports are written once they are" in line for line in log.lines())
        # What it asks instead: a watch per CRD, by name.
        uris = [request["uri"] for request in crd_requests(bare_cluster, started)]
        for name in REPORT_CRD_NAMES:
            assert any(f"metadata.name%3D{name}" in uri and "watch=true" in uri for uri in uris), uris

        with bare_cluster.api_client() as api:
            installed = time.monotonic()
            install_report_crds(api, CRD_FILES)
            report = wait_for(lambda: live_report(api, namespace), timeout=30, interval=0.1)
            print(f"report written {time.monotonic() - installed:.1f}s after the CRDs were installed")
            assert any(r["policy"] == "AH-RBAC-001" or "cluster-admin" in r["message"] for r in report["results"])

            extensions: Any = kubernetes.client.ApiextensionsV1Api(api)
            for name in REPORT_CRD_NAMES:
                extensions.delete_custom_resource_definition(name)
            wait_for(lambda: any("OpenReports CRDs (openreports.io) are gone" in line for line in log.lines()), 30)
            gone = time.time()
            time.sleep(5)
            assert report_requests(bare_cluster, gone + 1) == []  # nothing read or written once they are gone
    assert not [line for line in log.lines() if "[traceback]" in line or "ERROR" in line], log.lines()
