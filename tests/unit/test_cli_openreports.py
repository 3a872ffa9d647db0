"""`access-hygiene scan -o openreports` and `access-hygiene local --print-env`: offline, no cluster."""

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from access_hygiene.cli.main import main
from access_hygiene.localcluster.certs import ControlPlaneCerts, make_certs
from access_hygiene.localcluster.controlplane import ControlPlane, free_port
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


def _kubeconfig(workdir: Path, server: str, ca: Path, token: str) -> None:
    """The kubeconfig a local default writes (ControlPlane.render_kubeconfig), for `server` and its CA."""
    plane = ControlPlane(workdir=workdir)
    plane.server, plane._certs = server, ControlPlaneCerts(ca, ca, ca, ca, ca, ca)  # only ca_cert is read
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "kubeconfig").write_text(plane.render_kubeconfig(token, "local-admin"))


class _ReadyHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/readyz" and self.headers.get("Authorization") == "Bearer t0ken"
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A TLS server answering /readyz with 200 for the token `t0ken`, like a running local default."""
    certs = make_certs(tmp_path_factory.mktemp("server-pki"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ReadyHandler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.serving_cert, certs.serving_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", certs.ca_cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_print_env_prints_export_lines_while_its_api_server_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, api_server: tuple[str, Path]
) -> None:
    workdir = tmp_path / "local"
    _kubeconfig(workdir, api_server[0], api_server[1], "t0ken")
    assert main(["local", "--print-env", "--workdir", str(workdir)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"export KUBECONFIG={workdir / 'kubeconfig'}",
        f"export PATH={workdir / 'bin'}:$PATH",
    ]


def test_print_env_of_a_stopped_local_default_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The workdir (and its kubeconfig) outlives the local default; the export lines must not."""
    workdir = tmp_path / "local"
    _kubeconfig(workdir, f"https://127.0.0.1:{free_port()}", tmp_path, "t0ken")
    assert main(["local", "--print-env", "--workdir", str(workdir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"the local default in {workdir} is not running: nothing answers at https://127.0.0.1:" in captured.err
    assert "make run" in captured.err


def test_print_env_refuses_an_api_server_that_does_not_accept_the_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, api_server: tuple[str, Path]
) -> None:
    """Another process on the recorded port (the local default stopped, the port reused) is not the local default."""
    workdir = tmp_path / "local"
    _kubeconfig(workdir, api_server[0], api_server[1], "other-token")
    assert main(["local", "--print-env", "--workdir", str(workdir)]) == 2
    assert "answered /readyz with HTTP 401" in capsys.readouterr().err
