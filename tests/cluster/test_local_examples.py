"""`access-hygiene local --examples DIR` applies the manifests as written: a Namespace's labels survive the objects
applied into it afterwards (issue 25, item 1: an enforce label was silently dropped)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes
import pytest

from access_hygiene import FIELD_MANAGER
from access_hygiene.k8s.bootstrap import USER_FIELD_MANAGER
from access_hygiene.localcluster.controlplane import free_port
from tests.cluster.conftest import wait_for
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.cluster

# One file, so the order is as written: an object before its Namespace's manifest, the Namespace, objects after.
EXAMPLES = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: before, namespace: enf}
data: {a: "1"}
---
apiVersion: v1
kind: Namespace
metadata:
  name: enf
  labels: {accesshygiene.io/mode: enforce, team: x}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: after, namespace: enf}
data: {a: "1"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: enf}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: elsewhere, namespace: undeclared}
"""


def test_local_examples_keep_the_namespace_labels(tmp_path: Path) -> None:
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / "enf.yaml").write_text(EXAMPLES)
    workdir, log = tmp_path / "local", tmp_path / "local.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "operator")}
    command = [sys.executable, "-m", "access_hygiene.cli.main", "local", "--workdir", str(workdir),
               "--examples", str(examples), "--metrics-port", str(free_port()), "--liveness", ""]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO_ROOT)
        try:
            # The operator starts after the last manifest was applied: then everything `local` applied is there.
            wait_for(lambda: process.poll() is not None or "Operator starting" in log.read_text(), timeout=120)
            assert process.poll() is None, log.read_text()[-3000:]
            assert "applied ConfigMap undeclared/elsewhere" in log.read_text()
            with kubernetes.config.new_client_from_config(config_file=str(workdir / "kubeconfig")) as api:
                core = kubernetes.client.CoreV1Api(api)
                labels = core.read_namespace("enf").metadata.labels
                assert labels == {"accesshygiene.io/mode": "enforce", "team": "x", "kubernetes.io/metadata.name": "enf"}
                assert {c.metadata.name for c in core.list_namespaced_config_map("enf").items} >= {"before", "after"}
                # A namespace no manifest declares is created bare.
                bare = core.read_namespace("undeclared").metadata.labels
                assert bare == {"kubernetes.io/metadata.name": "undeclared"}
                # Once the operator has reconciled the namespace (its default deny is there), the labels are still on.
                networking = kubernetes.client.NetworkingV1Api(api)
                wait_for(lambda: networking.list_namespaced_network_policy("enf").items, timeout=60)
                assert core.read_namespace("enf").metadata.labels["accesshygiene.io/mode"] == "enforce"
                # The manifests are the user's, applied under a manager of their own: the operator's applies (same
                # namespace, its annotations) never own, and so can never relinquish, the user's labels.
                owners = {e.manager: e.fields_v1 for e in core.read_namespace("enf").metadata.managed_fields}
                assert "f:labels" in owners[USER_FIELD_MANAGER]["f:metadata"]
                assert "f:labels" not in (owners.get(FIELD_MANAGER) or {}).get("f:metadata", {})
                after = core.read_namespaced_config_map("after", "enf").metadata.managed_fields
                assert {e.manager for e in after} == {USER_FIELD_MANAGER}
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, log.read_text()[-3000:]
