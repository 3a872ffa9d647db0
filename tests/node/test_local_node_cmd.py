"""`access-hygiene local --node` (what `make run-node` runs), as a user runs it: a subprocess with --duration. Its
printed export lines lead to a cluster where the operator Pod from the chart is Ready and examples/ are Ready, the
printed /metrics URL answers from this machine, and when it has stopped no node process is left.

It starts a node of its own, so it runs before the session's node (tests/node/conftest.py puts it first)."""

import fcntl
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

import kubernetes
import pytest

from access_hygiene.k8s.bootstrap import load_manifests
from access_hygiene.localcluster.image import missing_tools
from access_hygiene.localcluster.node import LOCK_PATH, find_node_binaries, missing_prerequisites
from access_hygiene.localcluster.node_cluster import access_policies, ready_operator_pods, ready_policies
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.node
EXAMPLES = REPO_ROOT / "examples"
STARTUP_TIMEOUT = 900  # a cold image build is minutes; warm, node + image import + chart is well under a minute


def _read_lines(stream: IO[str], lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _node_processes(bin_dir: Path) -> list[str]:
    """Running processes whose executable is one of the node's binaries."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = Path(os.readlink(proc / "exe"))
        except OSError:
            continue
        if exe.is_relative_to(bin_dir):
            found.append(f"{proc.name} {exe}")
    return found


def test_local_node_runs_the_operator_in_its_pod_and_stops_clean(tmp_path: Path) -> None:
    problems = missing_prerequisites() + [f"the operator image needs {tool}" for tool in missing_tools()]
    if problems:
        message = "`local --node` cannot run here: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    node_bin = find_node_binaries()
    command = [str(Path(sys.executable).parent / "access-hygiene"), "local", "--node", "--duration", "20",
               "--examples", str(EXAMPLES), "--workdir", str(tmp_path / "local")]  # fmt: skip
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        while not any(line.startswith("Running until Ctrl-C") for line in output):
            line = lines.get(timeout=max(1.0, STARTUP_TIMEOUT - (time.monotonic() - started)))
            assert line is not None, "`local --node` exited before the operator ran:\n" + "\n".join(output[-40:])
            output.append(line)
        ready_after = time.monotonic() - started
        exports = dict(re.findall(r"^\s*export (\w+)=(\S+)", "\n".join(output), flags=re.MULTILINE))
        assert set(exports) == {"KUBECONFIG", "PATH"}
        assert (Path(exports["PATH"].split(":")[0]) / "kubectl").is_file()
        (metrics_url,) = re.findall(r"curl -s (http://10\.244\.\d+\.\d+:\d+/metrics)", "\n".join(output))
        with kubernetes.config.new_client_from_config(config_file=exports["KUBECONFIG"]) as api:
            (pod,) = ready_operator_pods(kubernetes.client.CoreV1Api(api))
            assert pod.spec.containers[0].image_pull_policy == "Never"
            wanted = access_policies(load_manifests([EXAMPLES]))
            assert wanted
            assert wanted <= ready_policies(kubernetes.client.CustomObjectsApi(api))
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            assert "access_hygiene_" in response.read().decode()
        assert process.wait(timeout=300) == 0, "\n".join(output[-40:])
        exited_after = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=300)
        while (line := lines.get(timeout=10)) is not None:
            output.append(line)
        process.stdout.close()
    assert output[-1] == "Stopped.", "\n".join(output[-40:])
    assert _node_processes(node_bin) == []
    with LOCK_PATH.open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if a node still held it
        fcntl.flock(lock, fcntl.LOCK_UN)
    stop = exited_after - ready_after - 20  # --duration 20 counts from Ready
    print(f"\nlocal --node: operator Pod and examples Ready {ready_after:.1f}s after start; stopped in ~{stop:.1f}s")
