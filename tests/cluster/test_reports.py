"""OpenReports objects written by ReportWriter into the real API server: changed ones only, stale ones deleted,
others' reports untouched. Writes are counted from the API server's audit log, not from the writer."""

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest

from access_hygiene.engine.audit.runner import run_audit
from access_hygiene.k8s.reports import ReportWriter, install_report_crds
from access_hygiene.k8s.snapshot_loader import load_snapshot
from access_hygiene.localcluster.controlplane import OPERATOR_USER
from access_hygiene.models.findings import Finding, ObjectRef, Severity
from access_hygiene.settings import OperatorSettings
from tests.audit_log import audit_log_events
from tests.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster
GROUP, VERSION = "openreports.io", "v1alpha1"
RBAC_V1 = "rbac.authorization.k8s.io/v1"
CRD_FILES = [
    REPO_ROOT / "crds" / "openreports.io_reports.yaml",
    REPO_ROOT / "crds" / "openreports.io_clusterreports.yaml",
]


@pytest.fixture(scope="module")
def reports_cluster(cluster: Cluster) -> Cluster:
    with cluster.api_client() as api:
        assert install_report_crds(api, CRD_FILES) == ["reports.openreports.io", "clusterreports.openreports.io"]
    return cluster


@pytest.fixture
def operator_api(reports_cluster: Cluster) -> Iterator[kubernetes.client.ApiClient]:
    """The operator's own identity, so the audit log tells the writer's requests apart."""
    path = str(reports_cluster.control_plane.operator_kubeconfig)
    with kubernetes.config.new_client_from_config(config_file=path) as api:
        yield api


@pytest.fixture
def namespaces(reports_cluster: Cluster) -> Iterator[list[str]]:
    names = [f"r-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with reports_cluster.api_client() as api:
        core: Any = kubernetes.client.CoreV1Api(api)
        for name in names:
            core.create_namespace({"metadata": {"name": name}})
        yield names
        for name in names:
            core.delete_namespace(name)


def finding(namespace: str, name: str, severity: Severity = Severity.HIGH, exempted: bool = False) -> Finding:
    return Finding(
        rule_id="AH-RBAC-009",
        severity=severity,
        namespace=namespace,
        object=ObjectRef(
            kind="RoleBinding", name=name, namespace=namespace, api_version="rbac.authorization.k8s.io/v1"
        ),
        message=f"{name} reads secrets",
        exempted=exempted,
        exemption_reason="ticket" if exempted else "",
    )


def report(api: kubernetes.client.ApiClient, namespace: str) -> dict[str, Any] | None:
    custom: Any = kubernetes.client.CustomObjectsApi(api)
    try:
        return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "reports", "access-hygiene"))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def report_writes(cluster: Cluster, since: float, namespaces: list[str]) -> list[str]:
    """The operator identity's write requests ("verb namespace/resource") on openreports.io objects in these
    namespaces, from the audit log (a create's objectRef has no name)."""
    writes = []
    for event in audit_log_events(cluster.control_plane.audit_log_path):
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") != "ResponseComplete"
            or event["user"]["username"] != OPERATOR_USER
            or ref.get("apiGroup") != GROUP
            or ref.get("namespace") not in namespaces
            or event["verb"] in ("get", "list", "watch")
            or (event.get("responseStatus") or {}).get("code", 200) >= 400
        ):
            continue
        if datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since:
            writes.append(f"{event['verb']} {ref.get('namespace')}/{ref.get('resource')}")
    return writes


def writes_become(cluster: Cluster, since: float, namespaces: list[str], expected: list[str]) -> None:
    """The audit log (flushed asynchronously) shows exactly `expected` writes after `since`, within 10 s."""
    expected = sorted(expected)
    deadline = time.monotonic() + 10
    while sorted(report_writes(cluster, since, namespaces)) != expected and time.monotonic() < deadline:
        time.sleep(0.25)
    assert sorted(report_writes(cluster, since, namespaces)) == expected


def settle() -> float:
    """A timestamp strictly after the previous requests (audit timestamps have microseconds)."""
    time.sleep(0.05)
    return time.time()


def test_writes_changed_reports_only_and_deletes_stale_ones(
    reports_cluster: Cluster, operator_api: kubernetes.client.ApiClient, namespaces: list[str]
) -> None:
    a, b = namespaces
    writer = ReportWriter()
    findings = [finding(a, "one"), finding(a, "two", Severity.LOW), finding(b, "three", exempted=True)]

    since = settle()
    assert writer.sync(operator_api, findings) >= 2
    with reports_cluster.api_client() as api:
        written = report(api, a)
        assert written is not None
        assert written["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "access-hygiene"
        assert written["summary"] == {"pass": 0, "fail": 1, "warn": 1, "error": 0, "skip": 0}
        assert [r["resources"][0]["name"] for r in written["results"]] == ["one", "two"]
        assert report(api, b)["summary"]["skip"] == 1  # type: ignore[index]
    writes_become(reports_cluster, since, namespaces, [f"create {a}/reports", f"create {b}/reports"])

    # Same findings again: zero writes, by the writer's count and by the API server's audit log.
    since = settle()
    assert writer.sync(operator_api, list(reversed(findings))) == 0
    # A new writer (operator restart) learns the live reports instead of rewriting them.
    assert ReportWriter().sync(operator_api, findings) == 0
    time.sleep(1.5)
    assert report_writes(reports_cluster, since, namespaces) == []

    # One namespace changes: one write; the other namespace's findings are gone: its report is deleted.
    since = settle()
    assert writer.sync(operator_api, [finding(a, "one")]) == 2
    writes_become(reports_cluster, since, namespaces, [f"delete {b}/reports", f"patch {a}/reports"])
    with reports_cluster.api_client() as api:
        assert report(api, b) is None
        assert report(api, a)["summary"]["warn"] == 0  # type: ignore[index]


def test_a_report_it_does_not_own_is_left_alone(
    reports_cluster: Cluster, operator_api: kubernetes.client.ApiClient, namespaces: list[str]
) -> None:
    a, _ = namespaces
    foreign = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Report",
        "metadata": {"name": "access-hygiene", "namespace": a, "labels": {"app.kubernetes.io/managed-by": "kyverno"}},
        "source": "kyverno",
        "results": [{"policy": "someone-elses", "result": "pass"}],
    }
    with reports_cluster.api_client() as api:
        custom: Any = kubernetes.client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(GROUP, VERSION, a, "reports", foreign)
        since = settle()
        writer = ReportWriter()
        writer.sync(operator_api, [finding(a, "one")])  # writes elsewhere: stale reports of other tests go
        writer.sync(operator_api, [])  # the foreign report is not ours, so not stale either
        time.sleep(1.5)
        assert report_writes(reports_cluster, since, [a]) == []
        live = report(api, a)
        assert live is not None
        assert live["source"] == "kyverno"
        assert live["results"] == foreign["results"]


def test_a_live_scan_becomes_reports(
    reports_cluster: Cluster, operator_api: kubernetes.client.ApiClient, namespaces: list[str]
) -> None:
    """The whole path: a risky RoleBinding in the cluster, a real scan, its finding in the namespace's Report."""
    a, _ = namespaces
    with reports_cluster.api_client() as api:
        rbac: Any = kubernetes.client.RbacAuthorizationV1Api(api)
        rbac.create_namespaced_role(a, {"metadata": {"name": "secret-reader"}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]})  # fmt: skip
        rbac.create_namespaced_role_binding(a, {
            "metadata": {"name": "ci-reads-secrets"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "ci", "namespace": a}]})  # fmt: skip
    findings = run_audit(load_snapshot(operator_api), OperatorSettings().audit_context(now=datetime.now(UTC)))
    ours = [f for f in findings if f.namespace == a]
    assert ours, "the scan found nothing in the namespace"
    writer = ReportWriter()
    writer.sync(operator_api, findings)
    with reports_cluster.api_client() as api:
        live = report(api, a)
    assert live is not None
    assert {(r["policy"], r["resources"][0]["name"]) for r in live["results"]} == {
        (f.rule_id, f.object.name) for f in ours
    }
    assert any(r["policy"] == "AH-RBAC-009" for r in live["results"])
