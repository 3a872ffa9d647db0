"""The README's "Using it" block, run verbatim against a running `access-hygiene local` (what `make run` starts).

Each shell line of the block runs in order in bash, with the export lines before it, in a scratch
directory standing in for the repository root ($PWD/.local-cluster). Real kubectl (built by
controlplane/build.sh and put on PATH by the printed export line), real curl, real `access-hygiene scan`.
One substitution only: the operator listens on free ports instead of 9808/8080, so parallel runs do
not collide; the test checks the README names the default port the local default really uses.
Every command of the block must have an expectation here: a new README line fails until it has one.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from access_hygiene.localcluster.controlplane import free_port
from tests.cluster.conftest import wait_for
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.cluster
README = REPO_ROOT / "README.md"
DEFAULT_METRICS_PORT = 9808
COMMENT = re.compile(r"\s+#.*$")


def using_it_block() -> list[str]:
    """The shell lines of the first ```bash block under "## Using it", comments stripped."""
    section = README.read_text().split("\n## Using it\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [COMMENT.sub("", line).strip() for line in block.splitlines() if line.strip()]


def make_run_command() -> list[str]:
    """The `access-hygiene local ...` line of the Makefile's run target, as a command list."""
    recipe = (REPO_ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    (line,) = [line.strip() for line in recipe.splitlines() if "access-hygiene local" in line]
    words = shlex.split(line)
    return [str(Path(sys.executable).parent / "access-hygiene"), *words[1:]]


@dataclass
class Local:
    cwd: Path
    process: subprocess.Popen[str]
    log: Path
    metrics_port: int

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    cwd = tmp_path_factory.mktemp("walkthrough")
    command = make_run_command()
    # The examples paths in the recipe are relative to the repository root.
    for index, word in enumerate(command[:-1]):
        if word == "--examples":
            command[index + 1] = str(REPO_ROOT / command[index + 1])
    metrics_port, health_port = free_port(), free_port()
    command += ["--workdir", str(cwd / ".local-cluster"), "--metrics-port", str(metrics_port),
                "--liveness", f"http://127.0.0.1:{health_port}/healthz"]  # fmt: skip
    log = cwd / "make-run.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KUBECONFIG", None)
    with log.open("w") as out:
        # Its own process group: the control plane it starts goes down with it, whatever happens to it.
        process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                                   start_new_session=True)  # fmt: skip
    running = Local(cwd, process, log, metrics_port)
    try:
        wait_for(lambda: process.poll() is not None or "Operator starting" in running.output(), timeout=180)
        assert process.poll() is None, running.output()
        yield running
    finally:
        stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    """Ctrl-C as a person would; then the process group (the control plane binaries) if anything is left."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def run(local: Local, exports: list[str], command: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("KUBECONFIG",)}
    # What a fresh shell has: the venv's access-hygiene only via the printed PATH line; no kubectl.
    venv_bin = Path(sys.executable).parent
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != venv_bin)
    command = command.replace(f"localhost:{DEFAULT_METRICS_PORT}", f"localhost:{local.metrics_port}")
    script = "\n".join(["set -eo pipefail", *exports, command])
    return subprocess.run(["bash", "-c", script], cwd=local.cwd, env=env, capture_output=True, text=True, timeout=120)


def table(output: str) -> list[dict[str, str]]:
    """kubectl's table output as rows of column -> value, cut at the header's column offsets (cells may be empty)."""
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return []
    starts = [match.start() for match in re.finditer(r"\S+", lines[0])]
    names = lines[0].split()
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [{name: line[a:b].strip() for name, (a, b) in zip(names, bounds, strict=True)} for line in lines[1:]]


# --- expectations, one per README command -----------------------------------------------------------


def expect_access_policies(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    rows = table(result.stdout)
    header = result.stdout.split()[:6]
    assert header == ["NAMESPACE", "NAME", "READY", "MODE", "SERVICEACCOUNT", "VIOLATIONS"], result.stdout
    by_name = {(row["NAMESPACE"], row["NAME"]): row for row in rows}
    assert {("shop", "orders-api"), ("shop", "web"), ("platform-tools", "pod-watcher")} <= set(by_name)
    ready = all(row.get("READY") == "True" and row.get("MODE") == "enforce" for row in by_name.values())
    if ready:
        assert by_name[("shop", "orders-api")]["SERVICEACCOUNT"] == "orders-api"
        assert all(row.get("VIOLATIONS", "").isdigit() for row in by_name.values()), result.stdout
    return ready


def expect_generated_objects(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    out = result.stdout
    needed = ["serviceaccount/orders-api", "serviceaccount/web",
              "role.rbac.authorization.k8s.io/access-hygiene-orders-api",
              "rolebinding.rbac.authorization.k8s.io/access-hygiene-orders-api",
              "networkpolicy.networking.k8s.io/access-hygiene-default-deny",
              "networkpolicy.networking.k8s.io/access-hygiene-orders-api"]  # fmt: skip
    return all(name in out for name in needed)


def expect_metrics(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    names = {line.split("{")[0].split(" ")[0] for line in result.stdout.splitlines() if not line.startswith("#")}
    assert all(name.startswith("access_hygiene_") for name in names), names
    # A full scan has run: its findings and timestamp are exported.
    return {"access_hygiene_build_info", "access_hygiene_violations", "access_hygiene_last_scan_timestamp_seconds",
            "access_hygiene_namespaces_by_control"} <= names  # fmt: skip


def expect_scan(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    # examples/findings: a secrets-reading CI account, a cluster-admin binding, an exempted privileged pod.
    counted = re.search(r"(\d+) finding\(s\)", result.stdout)
    return counted is not None and int(counted.group(1)) >= 2 and "exempt" in result.stdout


def expect_reports(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    # examples/findings leaves risky objects in namespace legacy: its report holds failures once converged
    # (shop's pre-fix findings are gone once the operator has fixed it, and its report with them).
    rows = table(result.stdout)
    return any(
        row.get("NAME") == "access-hygiene" and row.get("NAMESPACE") == "legacy" and int(row.get("FAIL") or 0) >= 1
        for row in rows
    )


def expect_warning_events(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    # examples/findings binds cluster-admin to a ServiceAccount: the operator announces it on the binding.
    return (
        "AccessHygieneViolation" in result.stdout and "legacy-admin" in result.stdout and "AH-RBAC-001" in result.stdout
    )


def expect_openreports_output(local: Local, result: subprocess.CompletedProcess[str]) -> bool:
    return "kind: Report" in result.stdout and "policy: AH-" in result.stdout


EXPECTATIONS: dict[str, Callable[[Local, subprocess.CompletedProcess[str]], bool]] = {
    "kubectl get ap -A": expect_access_policies,
    "kubectl get sa,role,rolebinding,networkpolicy -n shop": expect_generated_objects,
    f"curl -s localhost:{DEFAULT_METRICS_PORT}/metrics | grep access_hygiene_": expect_metrics,
    "access-hygiene scan": expect_scan,
    "access-hygiene scan -o openreports": expect_openreports_output,
    "kubectl get reports -A": expect_reports,
    "kubectl get events -A --field-selector reason=AccessHygieneViolation": expect_warning_events,
}


def test_readme_names_the_default_metrics_port_and_the_make_run_command() -> None:
    commands = using_it_block()
    assert commands[0] == "make run"
    assert any(f"localhost:{DEFAULT_METRICS_PORT}" in c for c in commands)
    from access_hygiene.cli.main import build_parser

    args = build_parser().parse_args(["local"])
    assert args.metrics_port == DEFAULT_METRICS_PORT
    assert make_run_command()[1:3] == ["local", "--examples"]
    assert "examples/findings" in make_run_command()  # the demo's findings (reports, scan output)


def test_every_readme_command_has_an_expectation() -> None:
    unknown = [c for c in using_it_block()[1:] if not c.startswith("export ") and c not in EXPECTATIONS]
    assert unknown == [], "add an expectation for these README commands to EXPECTATIONS"


def test_readme_walkthrough_runs_verbatim(local: Local) -> None:
    commands = using_it_block()
    assert commands[0] == "make run"  # that is the `local` fixture
    startup = local.output()
    assert "export KUBECONFIG=" in startup, startup
    assert "export PATH=" in startup, startup
    exports: list[str] = []
    for command in commands[1:]:
        if command.startswith("export "):
            assert command.split("=", 1)[0].split()[1] in startup, f"make run does not print {command}"
            exports.append(command)
            result = run(local, exports, "true")
            assert result.returncode == 0, result.stderr
            continue
        # The operator converges in seconds; poll until the output is what the README promises.
        deadline = time.monotonic() + 90
        while True:
            result = run(local, exports, command)
            if result.returncode == 0 and EXPECTATIONS[command](local, result):
                break
            if time.monotonic() > deadline:
                tail = local.output()[-3000:]
                pytest.fail(f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}\n{tail}")
            time.sleep(2)


def docs_kubectl_reads() -> list[str]:
    """The read-only kubectl lines (get/describe) of the docs' shell blocks, comments stripped.

    The in-cluster install commands (namespace access-hygiene: rollout status, port-forward) and writes
    are for a real cluster; these reads work on the local default too.
    """
    commands = []
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)\n```", page.read_text(), flags=re.DOTALL):
            for line in block.splitlines():
                command = COMMENT.sub("", line).strip()
                if re.match(r"kubectl (get|describe) ", command) and "access-hygiene" not in command.split("-n")[-1]:
                    commands.append(command)
    return commands


def test_docs_kubectl_reads_work_on_the_local_default(local: Local) -> None:
    commands = docs_kubectl_reads()
    assert "kubectl get reports -A" in commands
    exports = [c for c in using_it_block() if c.startswith("export ")]
    for command in commands:
        result = run(local, exports, command)
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "error" not in result.stderr.lower(), f"{command}: {result.stderr}"


def test_kubectl_on_the_printed_path_is_the_built_v1_36(local: Local) -> None:
    exports = [c for c in using_it_block() if c.startswith("export ")]
    result = run(local, exports, "command -v kubectl && kubectl version --client -o json")
    assert result.returncode == 0, result.stderr
    assert str(local.cwd / ".local-cluster" / "bin" / "kubectl") in result.stdout
    assert '"gitVersion": "v1.36.3"' in result.stdout


def test_print_env_prints_the_same_export_lines(local: Local) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "access-hygiene"), "local", "--print-env"],
        cwd=local.cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        f"export KUBECONFIG={local.cwd / '.local-cluster' / 'kubeconfig'}",
        f"export PATH={local.cwd / '.local-cluster' / 'bin'}:$PATH",
    ]
    for line in lines:
        assert line in local.output()


def install_block() -> list[str]:
    """The shell lines of the ```bash block under "## Install in a cluster", comments stripped."""
    section = README.read_text().split("\n## Install in a cluster\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [COMMENT.sub("", line).strip() for line in block.splitlines() if line.strip()]


def test_readme_helm_install_works_on_the_local_default(local: Local) -> None:
    """The README's `helm install`, verbatim, on what `make run` started. The local default has installed the CRD
    and the grant ceiling itself (Helm cannot take them over): the chart leaves them as they are, says so, and
    `helm uninstall` keeps them, so the local operator goes on working. Last in this module: it installs a release."""
    [command] = [line for line in install_block() if line.startswith("helm install ")]
    assert command == "helm install access-hygiene helm/access-hygiene --namespace access-hygiene --create-namespace"
    exports = [c for c in using_it_block() if c.startswith("export ")]

    def in_repository(line: str) -> subprocess.CompletedProcess[str]:
        # The export lines name $PWD/.local-cluster (the walkthrough's directory); the chart path is the repository's.
        return run(local, [*exports, f"cd {shlex.quote(str(REPO_ROOT))}"], line)

    ceiling_before = run(local, exports, "kubectl get clusterrole access-hygiene-grant-ceiling -o jsonpath='{.rules}'")
    assert ceiling_before.returncode == 0, ceiling_before.stderr
    installed = in_repository(command)
    assert installed.returncode == 0, installed.stderr
    assert "STATUS: deployed" in installed.stdout
    assert "The AccessPolicy CRD was already in the cluster, installed otherwise" in installed.stdout
    assert "It was already in the cluster with the same rules" in installed.stdout
    try:
        deployment = run(local, exports, "kubectl -n access-hygiene get deploy access-hygiene -o name")
        assert deployment.stdout.strip() == "deployment.apps/access-hygiene", deployment.stderr
        binding = run(local, exports, "kubectl get clusterrolebinding access-hygiene-grant-ceiling "
                                      "-o jsonpath='{.roleRef.name}'")  # fmt: skip
        assert binding.stdout == "access-hygiene-grant-ceiling", binding.stderr
    finally:
        uninstalled = in_repository("helm uninstall access-hygiene --namespace access-hygiene --wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    for kind_name in ("crd/accesspolicies.accesshygiene.io", "clusterrole/access-hygiene-grant-ceiling"):
        kept = run(local, exports, f"kubectl get {kind_name} -o name")
        assert kept.returncode == 0, f"helm uninstall removed {kind_name} that `make run` installed: {kept.stderr}"
    ceiling_after = run(local, exports, "kubectl get clusterrole access-hygiene-grant-ceiling -o jsonpath='{.rules}'")
    assert ceiling_after.stdout == ceiling_before.stdout
    assert expect_access_policies(local, run(local, exports, "kubectl get ap -A"))
