"""OpenReports: the committed CRDs equal their Go module's config/crd, and the chart renders the CRDs, the RBAC
and the operator settings the `reports` values promise."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from scripts import openreports_crds, render_chart
from scripts.render_chart import helm_template

from access_hygiene.render.reports import CLUSTER_REPORT_KIND, REPORT_KIND, REPORTS_API_VERSION
from tests.contract.chart import render

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]
REPORT_CRDS = {"reports.openreports.io", "clusterreports.openreports.io"}
REPORTS_RULE = {"apiGroups": ["openreports.io"], "resources": ["reports", "clusterreports"],
                "verbs": ["get", "list", "create", "patch", "delete"]}  # fmt: skip


def report_crds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "CustomResourceDefinition" and d["metadata"]["name"] in REPORT_CRDS
    }


def operator_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "access-hygiene"]
    return list(role["rules"])


def operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_committed_crds_are_the_go_modules_config_crd() -> None:
    """Drift test: `go mod download` the pinned module (checksum-verified) and compare byte for byte."""
    source = openreports_crds.module_dir()
    assert source.name == f"reports-api@{openreports_crds.REPORTS_API_VERSION}"
    for path, text in openreports_crds.render_crds(source).items():
        assert path.read_text() == text, "run `python scripts/openreports_crds.py` (make generate)"


def test_committed_crds_serve_the_kinds_the_renderer_writes() -> None:
    kinds = {}
    for name in openreports_crds.CRD_FILES:
        crd = yaml.safe_load((ROOT / "crds" / name).read_text())
        versions = [v["name"] for v in crd["spec"]["versions"] if v["served"]]
        kinds[crd["spec"]["names"]["kind"]] = (crd["spec"]["group"], versions, crd["spec"]["scope"])
    group, version = REPORTS_API_VERSION.split("/")
    assert kinds == {REPORT_KIND: (group, [version], "Namespaced"), CLUSTER_REPORT_KIND: (group, [version], "Cluster")}


def test_chart_crd_template_is_generated() -> None:
    assert render_chart.REPORT_CRDS_TEMPLATE_PATH.read_text() == render_chart.render_report_crds_template(), (
        "run `python scripts/render_chart.py`"
    )


def test_chart_renders_the_committed_crds_kept_by_default(helm: Path) -> None:
    crds = report_crds(render(helm))
    assert set(crds) == REPORT_CRDS
    for name in openreports_crds.CRD_FILES:
        committed = yaml.safe_load((ROOT / "crds" / name).read_text())
        rendered = crds[committed["metadata"]["name"]]
        assert rendered["spec"] == committed["spec"]
        assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_default_values_enable_reports_with_exactly_the_rbac_they_need(helm: Path) -> None:
    docs = render(helm)
    assert REPORTS_RULE in operator_rules(docs)
    assert [r for r in operator_rules(docs) if "openreports.io" in r["apiGroups"]] == [REPORTS_RULE]
    env = operator_env(docs)
    assert env["ACCESS_HYGIENE_WRITE_REPORTS"] == "true"
    assert env["ACCESS_HYGIENE_REPORT_MAX_RESULTS"] == "500"


@pytest.mark.parametrize(
    ("args", "rbac", "crds", "kept", "env"),
    [
        (["--set", "reports.enabled=false"], False, set(), False, "false"),
        (["--set", "reports.crds.install=false"], True, set(), False, "true"),
        (["--set", "reports.crds.keep=false"], True, REPORT_CRDS, False, "true"),
        (["--set", "reports.maxResults=50"], True, REPORT_CRDS, True, "true"),
    ],
    ids=["disabled", "crds-managed-elsewhere", "crds-not-kept", "smaller-reports"],
)
def test_reports_values(helm: Path, args: list[str], rbac: bool, crds: set[str], kept: bool, env: str) -> None:
    docs = render(helm, *args)
    assert (REPORTS_RULE in operator_rules(docs)) is rbac
    rendered = report_crds(docs)
    assert set(rendered) == crds
    for crd in rendered.values():
        assert ("helm.sh/resource-policy" in crd["metadata"]["annotations"]) is kept
    assert operator_env(docs)["ACCESS_HYGIENE_WRITE_REPORTS"] == env
    if "reports.maxResults=50" in args:
        assert operator_env(docs)["ACCESS_HYGIENE_REPORT_MAX_RESULTS"] == "50"


def test_reports_values_reach_the_operator_settings(helm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from access_hygiene.settings import OperatorSettings

    for name, value in operator_env(
        render(helm, "--set", "reports.enabled=false", "--set", "reports.maxResults=7")
    ).items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings()
    assert (settings.write_reports, settings.report_max_results) == (False, 7)


@pytest.mark.parametrize("value", ["0", "many"])
def test_invalid_max_results_fail(helm: Path, value: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failure:
        helm_template(helm, "--set", f"reports.maxResults={value}")
    assert "maxResults" in failure.value.stderr


def test_crd_template_skips_crds_another_release_or_tool_installed() -> None:
    """`helm template` cannot look up, so the guard is checked in the template text: a CRD is rendered only
    when absent or owned by this release (helm install would otherwise fail on Kyverno's or Policy Reporter's)."""
    template = render_chart.REPORT_CRDS_TEMPLATE_PATH.read_text()
    for name in sorted(REPORT_CRDS):
        assert f'lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "{name}"' in template
    assert template.count('"meta.helm.sh/release-name"') == 2
