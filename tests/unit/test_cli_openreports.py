"""`access-hygiene scan -o openreports` and `access-hygiene local --print-env`: offline, no cluster."""

import json
from pathlib import Path

import pytest
import yaml

from access_hygiene.cli.main import main
from access_hygiene.models.findings import Finding
from access_hygiene.render.reports import render_reports

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
FINDINGS_EXAMPLE = REPO / "examples" / "findings"


def test_scan_emits_the_reports_the_operator_writes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "-f", str(FINDINGS_EXAMPLE), "-o", "json"]) == 0
    findings = [Finding.model_validate(f) for f in json.loads(capsys.readouterr().out)["findings"]]
    assert main(["scan", "-f", str(FINDINGS_EXAMPLE), "-o", "openreports"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents == render_reports(findings)
    kinds = {(d["kind"], d["metadata"].get("namespace", "")) for d in documents}
    assert kinds == {("ClusterReport", ""), ("Report", "legacy")}
    legacy = next(d for d in documents if d["kind"] == "Report")
    assert legacy["summary"]["skip"] == 2  # the exempted privileged Deployment
    assert {r["policy"] for r in legacy["results"] if r["result"] == "fail"} == {"AH-RBAC-009"}


def test_scan_without_findings_emits_no_report(capsys: pytest.CaptureFixture[str]) -> None:
    good = REPO / "tests" / "unit" / "fixtures" / "rbac" / "AH-RBAC-009" / "good.yaml"
    assert main(["scan", "-f", str(good), "--rules", "AH-RBAC-009", "-o", "openreports"]) == 0
    out = capsys.readouterr().out
    assert list(yaml.safe_load_all(out)) == []
    assert out.startswith("# No findings")


def test_print_env_without_a_running_local_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["local", "--print-env", "--workdir", str(tmp_path / "none")]) == 2
    assert "no local default" in capsys.readouterr().err


def test_print_env_prints_export_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "kubeconfig").write_text("{}")
    assert main(["local", "--print-env", "--workdir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"export KUBECONFIG={tmp_path / 'kubeconfig'}",
        f"export PATH={tmp_path / 'bin'}:$PATH",
    ]
