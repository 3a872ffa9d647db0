"""A real Prometheus (Debian's `prometheus`) scrapes the operator running against the local control plane.

Seeded risk: cluster-admin bound to system:anonymous and to a ServiceAccount, a namespace left with the
default ServiceAccount automounting its token and no default-deny. Then, through Prometheus' HTTP API:
every dashboard panel query returns data, every alert rule evaluates without error, and the anonymous
and critical alerts fire (rules as shipped, with `for` shortened to seconds).
"""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.k8s import resources
from access_hygiene.localcluster.controlplane import free_port
from monitoring import DASHBOARD_PATH, RULES_PATH
from tests.cluster.conftest import wait_for
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster

SCRAPE_SECONDS = 1
SHORT_FOR = "3s"
# Grafana variables, resolved the way the dashboard would with "All" selected.
GRAFANA_SUBSTITUTIONS = {"$__rate_interval": "30s", "$namespace_class": ".*"}
# Per-namespace/per-subject/per-object families: exported only with detailed metrics, which this operator runs without.
DETAILED_ONLY = (
    "access_hygiene_subject_capability",
    "access_hygiene_namespace_violations",
    "access_hygiene_namespace_controls",
    "access_hygiene_violation_detail",
)
ALERTS_THAT_MUST_FIRE = ("AccessHygieneAnonymousAccessGranted", "AccessHygieneCriticalViolation")


def http_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> dict[str, Any]:
        data: dict[str, Any] = http_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        return data

    def result(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


SCENARIO = """
apiVersion: v1
kind: Namespace
metadata: {name: NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: NAMESPACE}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: NAMESPACE-anonymous-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:anonymous"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: NAMESPACE-deployer-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: deployer, namespace: NAMESPACE}]
---
# A visible, expiring exemption: its AH-SA-001 finding is counted as exempted, not as a violation.
apiVersion: v1
kind: Namespace
metadata:
  name: NAMESPACE-legacy
  annotations:
    accesshygiene.io/exempt: AH-SA-001
    accesshygiene.io/exempt-owner: platform-team
    accesshygiene.io/exempt-reason: legacy batch jobs still read the API with the default token
    accesshygiene.io/exempt-until: "UNTIL"
"""


@pytest.fixture(scope="module")
def risky_scenario(crd_installed: Cluster) -> Iterator[str]:
    """Objects every audit must flag; removed afterwards (anonymous cluster-admin must not outlive the test)."""
    namespace = f"ah-e2e-{uuid.uuid4().hex[:8]}"
    until = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    manifests = list(yaml.safe_load_all(SCENARIO.replace("NAMESPACE", namespace).replace("UNTIL", until)))
    with crd_installed.api_client() as api:
        try:
            for manifest in manifests:
                resources.apply(api, manifest)
            yield namespace
        finally:
            for manifest in reversed(manifests):
                meta = manifest["metadata"]
                resources.delete(api, manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace", ""))


@pytest.fixture(scope="module")
def operator_metrics(
    crd_installed: Cluster, risky_scenario: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`access-hygiene run` as its own process (as in production), metrics on 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("operator")
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(crd_installed.control_plane.operator_kubeconfig),
        "ACCESS_HYGIENE_MODE": "audit",
        "ACCESS_HYGIENE_METRICS_ADDR": "127.0.0.1",
        "ACCESS_HYGIENE_SCAN_INTERVAL_SECONDS": "2",
        "ACCESS_HYGIENE_DETAILED_METRICS": "false",
        "ACCESS_HYGIENE_OPERATOR_NAMESPACE": "access-hygiene",
    }
    command = [
        sys.executable, "-m", "access_hygiene.cli.main", "run",
        "--metrics-port", str(port),
        "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
    ]  # fmt: skip
    log = workdir / "operator.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def scanned() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"operator exited with {process.returncode}")
            return http_ok(url) and b"access_hygiene_last_scan_timestamp_seconds " in urllib.request.urlopen(url).read()

        try:
            wait_for(scanned, timeout=90, interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\noperator log:\n{tail(log)}") from error
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def prometheus(operator_metrics: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is missing in CI: apt-get install -y prometheus")
        pytest.skip("prometheus not installed (Debian package `prometheus`); CI=true makes this a failure")
    workdir = tmp_path_factory.mktemp("prometheus")
    spec = yaml.safe_load(RULES_PATH.read_text())
    for group in spec["groups"]:
        group["interval"] = f"{SCRAPE_SECONDS}s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
    (workdir / "rules.yaml").write_text(yaml.safe_dump(spec))
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "evaluation_interval": f"{SCRAPE_SECONDS}s"},
        "rule_files": [str(workdir / "rules.yaml")],
        "scrape_configs": [{"job_name": "access-hygiene", "static_configs": [{"targets": [operator_metrics]}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    command = [
        binary,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: process.poll() is None and http_ok(f"{url}/-/ready"), timeout=60, interval=0.5)
        except AssertionError as error:
            raise AssertionError(f"{error}\nprometheus log:\n{tail(log)}") from error
        yield Prometheus(url)
    finally:
        stop(process)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD_PATH.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_SUBSTITUTIONS.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def test_prometheus_scrapes_the_operator(prometheus: Prometheus) -> None:
    targets = wait_for(
        lambda: [t for t in prometheus.query("up")["data"]["result"] if t["value"][1] == "1"], timeout=30
    )
    assert targets[0]["metric"]["job"] == "access-hygiene"


def test_seeded_risk_is_reported(prometheus: Prometheus, risky_scenario: str) -> None:
    anonymous = wait_for(lambda: prometheus.result('access_hygiene_violations{rule_id="AH-RBAC-002"} > 0'), timeout=60)
    assert {(series["metric"]["severity"], series["metric"]["namespace_class"]) for series in anonymous} == {
        ("critical", "cluster")
    }
    admins = wait_for(
        lambda: prometheus.result('access_hygiene_serviceaccounts_with_capability{capability="cluster-admin"} > 0'),
        timeout=60,
    )
    assert {series["metric"]["namespace_class"] for series in admins} >= {"other"}
    # cluster-admin implies every sensitive capability, so the deployer ranks among the top holders.
    top = wait_for(
        lambda: prometheus.result(
            f'access_hygiene_top_serviceaccount_capabilities{{namespace="{risky_scenario}",serviceaccount="deployer"}}'
        ),
        timeout=60,
    )
    assert float(top[0]["value"][1]) >= 5


def test_default_metrics_carry_no_per_subject_series(prometheus: Prometheus) -> None:
    wait_for(lambda: prometheus.result("access_hygiene_last_scan_timestamp_seconds"), timeout=60)
    for name in DETAILED_ONLY:
        assert prometheus.result(name) == [], f"{name} is exported without detailed metrics"


# Panels of opt-in features this operator runs without; each names the test that proves its metric.
OPT_IN_PANELS = {
    "Granted but unused (audit webhook)": "tests/cluster/test_audit_webhook.py (access_hygiene_unused_grants)",
}


def test_every_dashboard_panel_query_returns_data(prometheus: Prometheus) -> None:
    all_queries = panel_queries()
    queries = [(where, expr) for where, expr in all_queries if where.rsplit(" [", 1)[0] not in OPT_IN_PANELS]
    assert len(all_queries) - len(queries) == len(OPT_IN_PANELS)  # every opt-in panel still exists
    assert len(queries) >= 20

    def empty_queries() -> list[tuple[str, str]]:
        return [(where, expr) for where, expr in queries if not prometheus.result(expr)]

    # Rates need two scrapes inside the window; give Prometheus a few intervals before judging.
    deadline = time.monotonic() + 90
    empty = empty_queries()
    while empty and time.monotonic() < deadline:
        time.sleep(2)
        empty = empty_queries()
    assert not empty, "panel queries without data:\n" + "\n".join(f"{w}: {e}" for w, e in empty)


def test_every_alert_rule_evaluates_without_error(prometheus: Prometheus) -> None:
    shipped = {rule["alert"] for group in yaml.safe_load(RULES_PATH.read_text())["groups"] for rule in group["rules"]}

    def evaluated_rules() -> dict[str, dict[str, Any]]:
        groups = http_json(f"{prometheus.url}/api/v1/rules")["data"]["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        return rules if all(rule.get("lastEvaluation", "").startswith("20") for rule in rules.values()) else {}

    rules = wait_for(evaluated_rules, timeout=30)
    assert set(rules) == shipped
    unhealthy = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"}
    assert not unhealthy
    for name, rule in rules.items():
        assert prometheus.query(rule["query"])["status"] == "success", name


def test_anonymous_and_critical_alerts_fire(prometheus: Prometheus) -> None:
    def firing() -> set[str]:
        alerts = http_json(f"{prometheus.url}/api/v1/alerts")["data"]["alerts"]
        names = {alert["labels"]["alertname"] for alert in alerts if alert["state"] == "firing"}
        return names if set(ALERTS_THAT_MUST_FIRE) <= names else set()

    names = wait_for(firing, timeout=60, interval=1)
    # A healthy operator that scans every 2s must not look stalled or absent.
    assert not {"AccessHygieneScanStalled", "AccessHygieneScanMetricsAbsent"} & names
