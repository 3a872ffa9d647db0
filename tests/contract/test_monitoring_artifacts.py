"""The chart's monitoring files are generated, reference only metrics the operator exports, and pass promtool."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard
from monitoring.__main__ import main as generate
from monitoring.alerts import render_rules
from monitoring.dashboard import render_dashboard
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from access_hygiene.metrics import Metrics, ScanResult, UsageMetrics, UsageSnapshot
from access_hygiene.models.findings import Finding, ObjectRef, Severity, SubjectCapability
from monitoring import DASHBOARD_PATH, RULES_PATH

pytestmark = pytest.mark.contract

PROMQL_TESTS = sorted((Path(__file__).resolve().parents[1] / "monitoring").glob("*.yaml"))
METRIC_NAME = re.compile(r"\b(access_hygiene_[a-z_]+|process_[a-z_]+)\b")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return loaded


def rules() -> list[dict[str, Any]]:
    spec = yaml.safe_load(RULES_PATH.read_text())
    return [rule for group in spec["groups"] for rule in group["rules"]]


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def exported_metric_names() -> set[str]:
    """Sample names a fully populated operator exports (every family emits at least one series)."""
    metrics = Metrics()
    metrics.publish_scan(
        ScanResult(
            findings=[
                Finding(
                    rule_id="AH-RBAC-002",
                    severity=Severity.CRITICAL,
                    namespace="",
                    object=ObjectRef(kind="ClusterRoleBinding", name="anon"),
                    message="m",
                ),
                Finding(
                    rule_id="AH-SA-001",
                    severity=Severity.MEDIUM,
                    namespace="old",
                    object=ObjectRef(kind="ServiceAccount", name="default", namespace="old"),
                    message="m",
                    exempted=True,
                ),
            ],
            subject_capabilities=[SubjectCapability(namespace="a", service_account="b", capability="exec")],
            namespace_controls={("a", "default-deny"): True},
            exemptions={"active": 1},
            completed_at=1.0,
            duration_seconds=1.0,
        )
    )
    usage = UsageMetrics(metrics.registry)  # continuous mode registers these beside the others
    usage.publish(UsageSnapshot(unused={("a", "b"): 3}, subjects={"judged": 1}))
    usage.count_request("200")
    metrics.observe_reconcile("policy", "error", 1.0)
    metrics.set_managed_objects({})
    metrics.set_policies({})
    text = generate_latest(metrics.registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.parametrize(
    ("path", "render"),
    [
        pytest.param(DASHBOARD_PATH, render_dashboard, id="dashboard"),
        pytest.param(RULES_PATH, render_rules, id="rules"),
    ],
)
def test_committed_files_equal_the_generated_ones(path: Path, render: Any) -> None:
    assert path.read_text() == render(), f"{path} is stale: run `python -m monitoring`"


def test_check_mode_reports_current_files() -> None:
    assert generate(["--check"]) == 0


def test_dashboard_parses_as_a_grafana_dashboard() -> None:
    model = Dashboard.from_json(dashboard())
    assert model.uid == "access-hygiene"
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_queries_the_datasource_variable() -> None:
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    all_panels = dashboard()["panels"]
    ids = [panel["id"] for panel in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


@pytest.mark.parametrize(
    "section",
    ["Violations", "Risky subjects", "Namespace controls", "Policies and exemptions", "Operator health"],
)
def test_dashboard_has_each_section(section: str) -> None:
    assert section in {panel["title"] for panel in dashboard()["panels"] if panel["type"] == "row"}


def referenced_metrics() -> list[tuple[str, str]]:
    exprs = [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
    exprs += [(r["alert"], r["expr"]) for r in rules()]
    return [(where, name) for where, expr in exprs for name in METRIC_NAME.findall(expr)]


def test_queries_reference_only_exported_metrics() -> None:
    exported = exported_metric_names()
    missing = [(where, name) for where, name in referenced_metrics() if name not in exported]
    assert not missing, f"queries reference metrics the operator does not export: {missing}"


def test_every_alert_has_severity_and_annotations() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def test_every_alert_is_exercised_by_a_promtool_test() -> None:
    tested = {
        case["alertname"]
        for path in PROMQL_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert {rule["alert"] for rule in rules()} <= tested


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: apt-get install -y prometheus")
        pytest.skip("promtool not installed (Debian package `prometheus`); CI=true makes this a failure")
    return path


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES_PATH)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", PROMQL_TESTS, ids=[p.name for p in PROMQL_TESTS])
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
