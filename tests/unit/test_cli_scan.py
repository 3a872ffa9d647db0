"""`access-hygiene scan`, `who-can`, `explain`, `rules`: inputs, formats, exit codes (0 ok, 1 findings, 2 input)."""

import io
import json
import uuid
from pathlib import Path

import pytest
import yaml

from access_hygiene.cli.main import main
from access_hygiene.cli.scan import load_files
from tests.pinned_clock import PINNED_NOW

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "rbac"
SECRETS_BAD = FIXTURES / "AH-RBAC-009" / "bad.yaml"  # two high findings
EVENTS_BAD = FIXTURES / "AH-RBAC-021" / "bad.yaml"  # two low findings


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("path", "fail_on", "expected_code"),
    [
        (SECRETS_BAD, "none", 0),
        (SECRETS_BAD, "high", 1),
        (SECRETS_BAD, "critical", 0),
        (EVENTS_BAD, "low", 1),
        (EVENTS_BAD, "medium", 0),
        (FIXTURES / "AH-RBAC-009" / "good.yaml", "low", 0),
    ],
)
def test_fail_on_exit_codes(capsys: pytest.CaptureFixture[str], path: Path, fail_on: str, expected_code: int) -> None:
    code, _, _ = run_cli(capsys, "scan", "-f", str(path), "--rules", "AH-RBAC", "--fail-on", fail_on, "-o", "json")
    assert code == expected_code


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "-o", "json", "--rules", "AH-RBAC-009")
    data = json.loads(out)
    assert code == 0
    assert [(f["rule_id"], f["object"]["name"], f["severity"]) for f in data["findings"]] == [
        ("AH-RBAC-009", "alice-reads-secrets", "high"),
        ("AH-RBAC-009", "app-lists", "high"),
    ]
    assert data["summary"] == {"critical": 0, "high": 2, "medium": 0, "low": 0}


def test_sarif_output_points_at_files(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(capsys, "scan", "-f", str(FIXTURES / "AH-RBAC-009"), "-o", "sarif", "--rules", "AH-RBAC-009")
    log = json.loads(out)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert "AH-RBAC-009" in rule_ids
    lines = yaml.safe_load_all(SECRETS_BAD.read_text())
    assert lines is not None
    results = run["results"]
    assert {r["ruleId"] for r in results} == {"AH-RBAC-009"}
    binding_line = SECRETS_BAD.read_text().splitlines().index("kind: ClusterRoleBinding")  # doc starts 1 line above
    alice = next(r for r in results if "alice" in r["message"]["text"])
    physical = alice["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"].endswith("AH-RBAC-009/bad.yaml")
    assert physical["region"]["startLine"] == binding_line
    assert rule_ids[alice["ruleIndex"]] == "AH-RBAC-009"
    assert alice["level"] == "error"


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "--rules", "AH-RBAC-009")
    assert code == 0
    assert "AH-RBAC-009" in out
    assert "2 finding(s)" in out


def test_stdin_kubectl_list(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(yaml.safe_load_all(SECRETS_BAD.read_text()))
    for item in items:  # `kubectl get -o yaml` of one kind leaves kind on items; RoleBindingList-style omits it
        if item["kind"] == "Role":
            item.pop("kind")
    listing = {"apiVersion": "v1", "kind": "List", "items": [i for i in items if "kind" in i]}
    roles = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleList",
        "items": [i for i in items if "kind" not in i],
    }
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(listing) + "---\n" + json.dumps(roles)))
    code, out, _ = run_cli(capsys, "scan", "-f", "-", "-o", "json", "--rules", "AH-RBAC-009", "--fail-on", "high")
    assert code == 1
    assert len(json.loads(out)["findings"]) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: [unclosed\n", "invalid YAML/JSON"),
        ("- just\n- a list\n", "not a Kubernetes object"),
        ("kind: RoleBinding\nmetadata: {}\n", "without metadata.name"),
    ],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "input.yaml"
    path.write_text(content)
    code, out, err = run_cli(capsys, "scan", "-f", str(path))
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    "argv",
    [
        ("scan", "-f", "/does/not/exist"),
        ("scan", "-f", str(SECRETS_BAD), "--rules", "AH-NOPE-1"),
        ("explain", "system:serviceaccount:only-namespace", "-f", str(SECRETS_BAD)),
        ("who-can", "get", "/exec", "-f", str(SECRETS_BAD)),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.startswith("error:")


def test_exclude_subject_prefix_override(capsys: pytest.CaptureFixture[str]) -> None:
    good = str(FIXTURES / "AH-RBAC-001" / "good.yaml")
    _, out, _ = run_cli(capsys, "scan", "-f", good, "-o", "json", "--rules", "AH-RBAC-001")
    assert json.loads(out)["findings"] == []
    _, out, _ = run_cli(capsys, "scan", "-f", good, "-o", "json", "--rules", "AH-RBAC-001", "--no-default-excludes")
    assert [f["subject"]["name"] for f in json.loads(out)["findings"]] == ["system:kube-scheduler"]
    _, out, _ = run_cli(
        capsys, "scan", "-f", good, "-o", "json", "--rules", "AH-RBAC-001", "--exclude-subject-prefix", "bob"
    )
    assert [f["subject"]["name"] for f in json.loads(out)["findings"]] == ["system:kube-scheduler"]


def test_defaults_are_visible_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    assert "system:serviceaccount:kube-system:" in capsys.readouterr().out.replace("\n", "")


def test_who_can(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "who-can", "list", "secrets", "-n", "team", "-f", str(SECRETS_BAD), "-o", "json")
    assert code == 0
    assert sorted((e["subject"]["kind"], e["binding"]["name"]) for e in json.loads(out)) == [
        ("ServiceAccount", "app-lists"),
    ]
    _, out, _ = run_cli(capsys, "who-can", "get", "secrets", "-n", "team", "-f", str(SECRETS_BAD), "-o", "json")
    assert [e["subject"]["name"] for e in json.loads(out)] == ["alice"]
    _, out, _ = run_cli(capsys, "who-can", "create", "deployments.apps", "-n", "team", "-f",
                        str(FIXTURES / "AH-RBAC-015" / "bad.yaml"), "-o", "json")  # fmt: skip
    assert [e["subject"]["name"] for e in json.loads(out)] == ["deployer"]


def test_explain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "explain", "system:serviceaccount:team:app", "-f", str(SECRETS_BAD), "-o", "json")
    data = json.loads(out)
    assert code == 0
    assert data["capabilities"] == ["secrets-read"]
    assert [(b["binding"]["name"], b["role"]["name"]) for b in data["bindings"]] == [("app-lists", "lister")]
    code, out, _ = run_cli(capsys, "explain", "User:alice", "-f", str(SECRETS_BAD))
    assert code == 0
    assert "Capabilities: secrets-read" in out


def test_rules_listing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "rules", "-o", "json")
    ids = [r["id"] for r in json.loads(out)]
    assert code == 0
    assert {f"AH-RBAC-{n:03d}" for n in range(1, 23)} <= set(ids)
    assert ids == sorted(ids)


@pytest.mark.cluster
def test_live_scan(cluster: "object", capsys: pytest.CaptureFixture[str]) -> None:
    """Live input goes through k8s/snapshot_loader against the real control plane."""
    from access_hygiene.k8s import resources

    name = f"live-{uuid.uuid4().hex[:6]}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}],
    }
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
               "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]}  # fmt: skip
    with cluster.api_client() as api:  # type: ignore[attr-defined]
        resources.apply(api, role)
        resources.apply(api, binding)
        try:
            code, out, _ = run_cli(capsys, "scan", "--kubeconfig", str(cluster.kubeconfig), "-o", "json",  # type: ignore[attr-defined]
                                   "--fail-on", "critical")  # fmt: skip
        finally:
            resources.delete(api, "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", name)
            resources.delete(api, "rbac.authorization.k8s.io/v1", "ClusterRole", name)
    findings = json.loads(out)["findings"]
    assert code == 1
    assert [f["rule_id"] for f in findings if f["object"]["name"] == name] == ["AH-RBAC-010"]
    # Default RBAC objects of a fresh cluster are not reported.
    assert all(not f["object"]["name"].startswith("system:") for f in findings if f["rule_id"].startswith("AH-RBAC"))


# --- issue 14 defects 2 and 3: JSON input, odd objects in a directory -----------------------------------


def test_json_file_indented_with_tabs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    items = list(yaml.safe_load_all(SECRETS_BAD.read_text()))
    path = tmp_path / "dump.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent="\t"))
    code, out, err = run_cli(capsys, "scan", "-f", str(path), "-o", "sarif", "--rules", "AH-RBAC-009")
    assert (code, err) == (0, "")
    results = json.loads(out)["runs"][0]["results"]
    lines = path.read_text().splitlines()
    starts = [r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results]
    assert len(starts) == 2
    assert all(lines[n - 1] == "\t\t{" for n in starts)


def test_stdin_json_with_tabs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    items = list(yaml.safe_load_all(SECRETS_BAD.read_text()))
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"kind": "List", "items": items}, indent="\t")))
    code, out, _ = run_cli(capsys, "scan", "-f", "-", "-o", "json", "--rules", "AH-RBAC-009")
    assert code == 0
    assert len(json.loads(out)["findings"]) == 2


ODD_OBJECTS = """\
apiVersion: v1
kind: Node
metadata: {generateName: node-}
---
apiVersion: wgpolicyk8s.io/v1alpha2
kind: PolicyReport
results: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {generateName: reader-, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-reader}
subjects: [{kind: User, name: mallory}]
---
apiVersion: v1
kind: ServiceAccount
metadata: name-is-not-a-mapping
"""


def test_odd_objects_do_not_abort_a_directory_scan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a-good.yaml").write_text(SECRETS_BAD.read_text())
    (tmp_path / "b-odd.yaml").write_text(ODD_OBJECTS)
    (tmp_path / "c-template.yaml").write_text("kind: {{ .Values.kind }}\n  bad: [\n")
    code, out, err = run_cli(capsys, "scan", "-f", str(tmp_path), "-o", "json", "--rules", "AH-RBAC-009",
                             "--fail-on", "high")  # fmt: skip
    assert code == 1
    assert len(json.loads(out)["findings"]) == 2
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    odd = (tmp_path / "b-odd.yaml").as_posix()
    assert f"warning: {odd}: document 3: RoleBinding without metadata.name (a generateName manifest" in err
    assert f"warning: {odd}: document 4: ServiceAccount without metadata.name; skipped" in err
    assert f"{(tmp_path / 'c-template.yaml').as_posix()}: skipped, invalid YAML/JSON" in err.replace("\n", " ")
    assert "Node" not in err
    assert "PolicyReport" not in err  # kinds the rules do not read are ignored, not warned about
    assert len(warnings) == 3


def test_odd_list_item_is_named_by_document_and_item(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    listing = {"kind": "List", "items": [{"kind": "Role", "metadata": {"name": "ok", "namespace": "a"}},
                                         {"kind": "Role", "metadata": {"generateName": "r-"}}]}  # fmt: skip
    path = tmp_path / "list.yaml"
    path.write_text("kind: Namespace\nmetadata: {name: a}\n---\n" + yaml.safe_dump(listing))
    code, _, err = run_cli(capsys, "scan", "-f", str(path), "-o", "json")
    assert code == 0
    assert f"{path.as_posix()}: document 2 item 2: Role without metadata.name" in err.replace("\n", "")


def test_nothing_readable_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "odd.yaml").write_text(ODD_OBJECTS)
    code, out, err = run_cli(capsys, "scan", "-f", str(tmp_path))
    assert code == 2
    assert out == ""
    assert "error: nothing could be read from the input (2 problem(s) above)" in err


def test_only_unread_kinds_is_no_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "cm.yaml").write_text("kind: ConfigMap\nmetadata: {generateName: x-}\n")
    code, out, err = run_cli(capsys, "scan", "-f", str(tmp_path))
    assert (code, err) == (0, "")
    assert "No findings" in out


def test_pure_python_yaml_gives_a_notice(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from access_hygiene.cli import manifest_reader, scan

    monkeypatch.setattr(scan, "HAS_LIBYAML", False)
    monkeypatch.setattr(manifest_reader, "LOADER", yaml.SafeLoader)
    code, out, err = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "-o", "json", "--rules", "AH-RBAC-009")
    assert code == 0
    assert len(json.loads(out)["findings"]) == 2
    assert "notice: PyYAML has no LibYAML" in err


# --- issue 13 item 4: table output that does not wrap ------------------------------------------------------


def test_table_off_a_terminal_is_one_line_per_finding(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "--rules", "AH-RBAC-009")
    lines = out.splitlines()
    assert code == 0
    assert len(lines) == 3  # two findings and the summary: nothing wrapped into 15-character columns
    assert lines[0].split()[:3] == ["high", "AH-RBAC-009", "ClusterRoleBinding/alice-reads-secrets"]
    assert lines[0].endswith("User:alice can get secrets cluster-wide via ClusterRole/secret-reader")
    assert lines[2] == "2 finding(s): 0 critical, 2 high, 0 medium, 0 low"


def test_wide_output_has_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "--rules", "AH-RBAC-009", "-o", "wide")
    header, first, second, summary = out.splitlines()
    assert code == 0
    assert header.split() == ["SEVERITY", "RULE", "NAMESPACE", "OBJECT", "SUBJECT", "MESSAGE"]
    assert second.split()[:5] == ["high", "AH-RBAC-009", "team", "RoleBinding/team/app-lists",
                                  "system:serviceaccount:team:app"]  # fmt: skip
    assert first.index("User:alice") == header.index("SUBJECT")  # aligned columns
    assert summary.startswith("2 finding(s)")


@pytest.mark.parametrize(("width", "table"), [(160, True), (80, False)])
def test_table_on_a_terminal_depends_on_width(width: int, table: bool) -> None:
    from rich.console import Console

    from access_hygiene.cli.output import render_table
    from access_hygiene.engine.audit.runner import run_audit
    from access_hygiene.engine.ground.context import AuditContext

    findings = run_audit(load_files([str(SECRETS_BAD)]).snapshot, AuditContext(now=PINNED_NOW), only=["AH-RBAC-009"])
    console = Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)
    render_table(findings, console)
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert ("┃ Severity" in printed) is table
    assert (len(printed.splitlines()) > 3) is table  # a boxed table, or two finding lines and the summary


def test_phase_timings_on_request(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCESS_HYGIENE_TIMINGS", "1")
    run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "-o", "json")
    _, _, err = run_cli(capsys, "scan", "-f", str(SECRETS_BAD), "-o", "json")
    timings = json.loads(err.splitlines()[-1])["timings"]
    assert set(timings["wall"]) == set(timings["cpu"]) == {"import", "parse", "snapshot", "audit", "output"}
    assert all(value >= 0 for value in timings["wall"].values())


def test_cluster_role_with_a_namespace_scanned_from_a_chart(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 25 item 5: `scan -f` judges a ClusterRole that carries metadata.namespace (as Helm charts often write
    it) as the ClusterRole kube-apiserver stores, and SARIF still points at its file and line."""
    path = tmp_path / "chart.yaml"
    path.write_text(
        "# rendered by helm\n"
        "apiVersion: rbac.authorization.k8s.io/v1\n"
        "kind: ClusterRole\n"
        "metadata: {name: webhook-admin, namespace: kube-system}\n"
        "rules: [{apiGroups: [admissionregistration.k8s.io], resources: [mutatingwebhookconfigurations],"
        " verbs: ['*']}]\n"
    )
    _, out, _ = run_cli(capsys, "scan", "-f", str(path), "-o", "sarif", "--rules", "AH-RBAC-016,AH-RBAC-024")
    results = json.loads(out)["runs"][0]["results"]
    assert sorted((r["ruleId"], r["level"]) for r in results) == [("AH-RBAC-016", "warning"), ("AH-RBAC-024", "error")]
    for result in results:
        location = result["locations"][0]
        assert location["logicalLocations"][0]["fullyQualifiedName"] == "ClusterRole/webhook-admin"
        assert location["physicalLocation"]["region"]["startLine"] == 2
