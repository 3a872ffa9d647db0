"""`suggest` and `unused` commands: inputs (files, gzip, stdin, several files), outputs, and damaged input
(malformed lines, truncated gzip, other audit API versions) counted and reported, never a crash."""

import gzip
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from access_hygiene.cli.main import main
from access_hygiene.models.policy import AccessPolicySpec
from tests.unit.audit_events import SA, event, lines

pytestmark = pytest.mark.unit

APP_EVENTS = [
    event("get", "configmaps", name="orders-config", at="2026-11-01T00:00:00Z"),
    event("list", "pods", at="2026-11-05T00:00:00Z"),
    event("watch", "pods", stage="ResponseStarted", at="2026-11-05T00:00:01Z"),
    event("create", "events", name="orders-api.1", at="2026-11-05T00:00:02Z"),
    event("patch", "leases", group="coordination.k8s.io", name="orders-api", at="2026-11-10T00:00:00Z"),
    event("list", "nodes", namespace="", allowed=False, at="2026-11-10T00:00:00Z"),
]
EXPECTED_RULES = [
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["orders-api"],
     "verbs": ["patch"]},
]  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_suggest_yaml_is_a_valid_policy_with_denied_as_comments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    code, out, err = run(capsys, "suggest", log, "--serviceaccount", "shop:orders-api", "--mode", "enforce")
    assert code == 0, err
    policy = yaml.safe_load(out)
    assert policy["kind"] == "AccessPolicy"
    assert policy["spec"]["rbac"]["rules"] == EXPECTED_RULES
    assert AccessPolicySpec.model_validate(policy["spec"]).mode == "enforce"
    comments = [line for line in out.splitlines() if line.startswith("#")]
    assert any("list nodes cluster-wide (1x" in line for line in comments)
    assert any("kubectl annotate serviceaccount -n shop orders-api accesshygiene.io/adopt=true" in c for c in comments)
    assert not any("WARNING" in line for line in comments)
    assert "Read 6 line(s), 6 audit event(s); wrote 1 AccessPolicy(ies) (orders-api)." in err


def test_suggest_reads_gzip_stdin_and_several_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write(tmp_path / "audit-1.log.gz", gzip.compress(lines(*APP_EVENTS[:3])))
    second = write(tmp_path / "rotated", gzip.compress(lines(*APP_EVENTS[3:5])))  # gzip found by content
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines(APP_EVENTS[5]))))
    code, out, err = run(capsys, "suggest", first, second, "-", "--sa", SA, "-o", "json")
    assert code == 0, err
    data = json.loads(out)
    [entry] = data["suggestions"]
    assert entry["manifests"][0]["spec"]["rbac"]["rules"] == EXPECTED_RULES
    assert entry["denied"][0].startswith("list nodes cluster-wide")
    assert data["input"]["events"] == 6
    assert data["input"]["partial"] is False


def test_suggest_since_until(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    code, out, _ = run(capsys, "suggest", log, "--sa", "shop/orders-api", "--since", "2026-11-05",
                       "--until", "2026-11-15T00:00:00Z")  # fmt: skip
    assert code == 0
    rules = yaml.safe_load(out)["spec"]["rbac"]["rules"]
    assert [r["resources"] for r in rules] == [["events"], ["pods"], ["leases"]]  # the configmap get was before


def test_suggest_all_skips_system_namespaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = event("get", "pods", name="x", namespace="billing", user="system:serviceaccount:billing:worker")
    system = event("get", "pods", name="y", namespace="kube-system", user="system:serviceaccount:kube-system:dns")
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS, other, system, event("get", "pods", user="alice")))
    code, out, _ = run(capsys, "suggest", log, "--all")
    assert code == 0
    assert [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in yaml.safe_load_all(out)] == [
        ("billing", "worker"), ("shop", "orders-api"),
    ]  # fmt: skip


def test_damaged_input_is_counted_with_line_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = lines(*APP_EVENTS[:4])
    beta = json.dumps({**APP_EVENTS[4], "apiVersion": "audit.k8s.io/v1beta1"}).encode() + b"\n"
    plain = write(tmp_path / "audit.log", good[:40] + b"\n" + good + b"not json at all\n" + beta + b"\n")
    truncated = write(tmp_path / "old.log.gz", gzip.compress(lines(*APP_EVENTS) * 50)[:-200])
    code, out, err = run(capsys, "suggest", plain, truncated, "--sa", "shop:orders-api")
    assert code == 1  # written, but partial
    assert f"{plain}: 2 line(s) malformed-json (line 1, 6): " in err
    assert f"{plain}: 1 line(s) unsupported-api-version (line 7)" in err
    assert f"{truncated}: gzip stream truncated after line" in err
    assert out.startswith("# WARNING: partial input")
    assert yaml.safe_load(out)["kind"] == "AccessPolicy"


def test_a_live_logs_half_written_last_line_is_not_damage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, half = lines(*APP_EVENTS), lines(APP_EVENTS[0])[:100]  # no newline: the event still being written
    log = write(tmp_path / "audit.log", whole + half)
    code, out, err = run(capsys, "suggest", log, "--sa", "shop:orders-api", "-o", "json")
    assert code == 0, err
    assert "malformed" not in err
    report = json.loads(out)["input"]
    assert (report["partial"], report["skipped"]["incomplete-last-line"]) == (False, 1)
    assert report["events"] == len(APP_EVENTS)
    # The same half line with a newline and more after it is damage, and still reported as such.
    damaged = write(tmp_path / "damaged.log", whole + half + b"\n" + whole)
    code, _, err = run(capsys, "suggest", damaged, "--sa", "shop:orders-api")
    assert code == 1
    assert f"{damaged}: 1 line(s) malformed-json (line {len(APP_EVENTS) + 1})" in err
    # A last event that is whole but has no newline is read.
    code, out, _ = run(capsys, "suggest", write(tmp_path / "no-eol.log", whole.rstrip(b"\n")), "--sa",
                       "shop:orders-api", "-o", "json")  # fmt: skip
    assert (code, json.loads(out)["input"]["events"]) == (0, len(APP_EVENTS))


class GrowingLog(io.RawIOBase):
    """A log that kube-apiserver appends to while it is read: EOF in the middle of an event, the rest after."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)  # b"" = the reader reaches the end of what is written so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.chunks:
            return 0
        chunk = self.chunks.pop(0)
        size = min(len(buffer), len(chunk))
        buffer[:size] = chunk[:size]
        if size < len(chunk):
            self.chunks.insert(0, chunk[size:])
        return size


def test_a_log_growing_while_read_stops_at_its_last_whole_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    last = lines(APP_EVENTS[-1])
    growing = GrowingLog(lines(*APP_EVENTS[:-1]) + last[:60], b"", last[60:] + lines(APP_EVENTS[0]))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BufferedReader(growing)))
    code, out, err = run(capsys, "suggest", "-", "--sa", "shop:orders-api", "-o", "json")
    assert code == 0, err  # before: "2 line(s) malformed-json": the half event, then its rest as a line of its own
    report = json.loads(out)["input"]
    assert (report["events"], report["skipped"]["incomplete-last-line"], report["problems"]) == (
        len(APP_EVENTS) - 1, 1, [],
    )  # fmt: skip


def test_a_huge_line_is_skipped_in_bounded_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("access_hygiene.cli.auditlog_input.MAX_LINE_BYTES", 4096)
    log = write(tmp_path / "audit.log", lines(APP_EVENTS[0]) + b"x" * 50_000 + b"\n" + lines(*APP_EVENTS[1:]))
    code, out, err = run(capsys, "suggest", log, "--sa", "shop:orders-api")
    assert code == 1
    assert f"{log}: 1 line(s) line-too-long (line 2): longer than 4096 bytes" in err
    assert len(yaml.safe_load(out)["spec"]["rbac"]["rules"]) == 4  # the lines after it were read


def test_unknown_service_account_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    code, out, err = run(capsys, "suggest", log, "--sa", "shop:nobody")
    assert (code, out) == (1, "")
    assert "ServiceAccount shop/nobody made no request in the window" in err
    code, _, err = run(capsys, "suggest", str(tmp_path / "missing.log"), "--sa", "shop:x")
    assert code == 2
    assert "missing.log: cannot read" in err
    with pytest.raises(SystemExit):
        main(["suggest", log, "--sa", "no-namespace"])
    with pytest.raises(SystemExit):
        main(["suggest", log, "--sa", "a:b", "--since", "last tuesday"])


MANIFESTS = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: app-edit}
rules:
  - {apiGroups: [""], resources: [configmaps, pods], verbs: [get, list, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-edit, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: app-edit}
subjects:
  - {kind: ServiceAccount, name: orders-api, namespace: shop}
  - {kind: ServiceAccount, name: idle, namespace: shop}
"""


def unused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    manifests = tmp_path / "rbac.yaml"
    manifests.write_text(MANIFESTS)
    code, out, err = run(capsys, "unused", log, "-f", str(manifests), "-o", "json", *extra)
    return code, json.loads(out), err


def test_unused_from_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, err = unused(capsys, tmp_path, "--min-window", "9d")
    assert code == 0, err
    [finding] = data["findings"]
    assert (finding["rule_id"], finding["object"]["name"], finding["subject"]["name"]) == (
        "AH-RBAC-023",
        "app-edit",
        "orders-api",
    )  # fmt: skip  (idle is bound too but has no activity data)
    assert finding["unused"] == [
        {"apiGroup": "", "resource": "configmaps", "verbs": ["list", "create"]},
        {"apiGroup": "", "resource": "pods", "verbs": ["get", "create"]},
    ]
    assert finding["role"]["name"] == "app-edit"
    assert data["window"]["judged"] is True
    assert "Judged 1 active ServiceAccount(s) over 9d0h" in err


def test_unused_not_judged_on_a_short_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, err = unused(capsys, tmp_path)  # default --min-window 7d... the data spans 9 days
    assert code == 0
    code, data, err = unused(capsys, tmp_path, "--min-window", "10d")
    assert code == 3
    assert data["findings"] == []
    assert data["window"]["judged"] is False
    assert "Not judged: the audit data spans 9d0h" in err


def test_unused_table_says_not_judged_instead_of_no_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not judged is not "no findings": the table output (stdout) says it did not judge, and why."""
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    manifests = tmp_path / "rbac.yaml"
    manifests.write_text(MANIFESTS)
    code, out, err = run(capsys, "unused", log, "-f", str(manifests), "--min-window", "10d")
    assert code == 3, err
    assert "No findings" not in out
    assert out.startswith("Not judged: the audit data spans 9d0h"), out
    assert "less than --min-window 10d0h" in out
    # Judged and clean still says so.
    code, out, err = run(capsys, "unused", log, "-f", str(manifests), "--min-window", "9d",
                         "--sa", "shop:nobody")  # fmt: skip
    assert (code, out.strip()) == (0, "No findings."), err


def test_unused_sarif_carries_the_not_judged_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "audit.log", lines(*APP_EVENTS))
    manifests = tmp_path / "rbac.yaml"
    manifests.write_text(MANIFESTS)
    code, out, err = run(capsys, "unused", log, "-f", str(manifests), "--min-window", "10d", "-o", "sarif")
    assert code == 3, err
    [run_] = json.loads(out)["runs"]
    assert run_["results"] == []
    [invocation] = run_["invocations"]
    [notice] = invocation["toolExecutionNotifications"]
    assert notice["level"] == "warning"
    assert notice["message"]["text"].startswith("Not judged: the audit data spans 9d0h")


def test_suggest_comments_the_rule_it_widened_from_generated_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [event(verb, "secrets", name=f"sh.helm.release.v1.web.v{n}") for n in (1, 2, 3) for verb in ("get",)]
    events.append(event("get", "configmaps", name="orders-config"))
    log = write(tmp_path / "audit.log", lines(*events))
    code, out, err = run(capsys, "suggest", log, "--serviceaccount", "shop:orders-api")
    assert code == 0, err
    policy = yaml.safe_load(out)
    assert policy["spec"]["rbac"]["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["orders-config"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]
    body = out.splitlines()
    item = body.index("    - apiGroups: ['']", body.index("    - apiGroups: ['']") + 1)  # the second rule
    comment = body[item - 1]
    assert comment.startswith("    # secrets (get): not restricted to resourceNames"), body
    assert "sh.helm.release.v1.web.v1" in comment
    assert "namespace shop" in comment
    assert not body[item - 2].startswith("    #")  # only the widened rule carries a comment
    code, out, err = run(capsys, "suggest", log, "--serviceaccount", "shop:orders-api", "-o", "json")
    [entry] = json.loads(out)["suggestions"]
    [note] = entry["notes"]
    assert note["rule"] == "spec.rbac.rules[1]"
    assert "Helm release" in note["text"]
