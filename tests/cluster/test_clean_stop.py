"""SIGINT/SIGTERM stop `access-hygiene run` and `access-hygiene local` with exit 0, with no task left for kopf to
wait on, and `local` takes its etcd, kube-apiserver and kube-controller-manager down with it (no orphan, no
zombie)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, Cluster

pytestmark = pytest.mark.cluster

# Not a speed goal (the stop takes well under a second when idle; docs/performance.md): a bound that catches a
# hang, far inside a pod's default 30 s termination grace period, with room for a loaded CI machine.
STOPS_WITHIN = 15.0
# kopf's verbose log when no task outlived the operator's own shutdown; otherwise kopf waits up to 5 s on
# those "hung" tasks before cancelling them (a delay a pod pays on every rollout).
NO_HUNG_TASKS = "Hung tasks stopping is skipped: no tasks given."
# kopf's first API discovery is over once it watches AccessPolicies; a stop during that discovery leaves its
# requests to kopf's hung-task wait (kopf does not cancel them), which is kopf's to fix, not a shutdown path of ours.
STARTED = ("reacting to events", "Starting the watch-stream for accesspolicies")
CLI = [sys.executable, "-m", "access_hygiene.cli.main"]


def _wait_for_lines(process: subprocess.Popen[str], log: Path, texts: tuple[str, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(text in log.read_text() for text in texts):
            return
        if process.poll() is not None:
            raise AssertionError(f"exited early with {process.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"{texts!r} not printed within {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[str], signum: int) -> float:
    started = time.monotonic()
    process.send_signal(signum)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("did not exit within 30s") from None
    return time.monotonic() - started


def _processes_under(path: Path) -> list[str]:
    """Command lines of live processes mentioning path (the control plane's workdir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if str(path) in cmdline:
            found.append(f"{entry.name} {state} {cmdline[:120]}")
    return found


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator"), "ACCESS_HYGIENE_METRICS_PORT": "0", **extra}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_cleanly(crd_installed: Cluster, tmp_path: Path, signum: int) -> None:
    log = tmp_path / "run.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "run", "--liveness", "", "--verbose"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(KUBECONFIG=str(crd_installed.control_plane.operator_kubeconfig)),
        )
        _wait_for_lines(process, log, STARTED, timeout=60)
        took = _stop(process, signum)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert took < STOPS_WITHIN, f"stopped after {took:.1f}s"
    assert NO_HUNG_TASKS in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_local_stops_with_its_control_plane(tmp_path: Path, signum: int) -> None:
    workdir = tmp_path / "local-cluster"
    log = tmp_path / "local.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*CLI, "local", "--workdir", str(workdir), "--metrics-port", "0", "--liveness", "", "--verbose"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
            cwd=REPO_ROOT,
        )
        _wait_for_lines(process, log, STARTED, timeout=120)
        assert len(_processes_under(workdir)) >= 3, _processes_under(workdir)
        took = _stop(process, signum)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert took < STOPS_WITHIN, f"stopped after {took:.1f}s"
    assert NO_HUNG_TASKS in log.read_text(), log.read_text()[-3000:]
    assert _processes_under(workdir) == [], "control plane processes outlived `local`"
