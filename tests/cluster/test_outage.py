"""API server outage: kube-apiserver is killed and restarted on the same port while the operator runs.

Runs on a control plane of its own, so restarting the API server disturbs no other test module.
"""

import time
from collections.abc import Iterator

import kubernetes
import pytest
import yaml
from kopf.testing import KopfRunner

from access_hygiene.k8s import resources
from access_hygiene.localcluster import ControlPlane
from access_hygiene.render.grant_ceiling import render_grant_ceiling_role
from tests.cluster.conftest import OPERATOR_ENV, wait_for
from tests.cluster.test_policy_operator import API_READER, condition, create_policy, get_policy
from tests.conftest import CRD_PATH, Cluster

pytestmark = pytest.mark.cluster

# Generous for a noisy 2-core machine; the target is 10 s.
CONVERGES_WITHIN = 10.0


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    from access_hygiene.k8s.crds import install_crd

    with ControlPlane(audit_log=False) as control_plane:
        cluster = Cluster(control_plane)
        with cluster.api_client() as api:
            install_crd(api, yaml.safe_load(CRD_PATH.read_text()))
            resources.apply(api, render_grant_ceiling_role("access-hygiene-grant-ceiling"))
        yield cluster


def test_policy_created_after_an_api_server_restart_converges_quickly(
    own_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**OPERATOR_ENV, "ACCESS_HYGIENE_DRIFT_INTERVAL_SECONDS": "3600"}
    for key, value in {**env, "KUBECONFIG": str(own_cluster.control_plane.operator_kubeconfig)}.items():
        monkeypatch.setenv(key, value)
    args = ["run", "--standalone", "--all-namespaces", "-m", "access_hygiene.handlers"]
    with KopfRunner(args, timeout=90) as runner, own_cluster.api_client() as api:
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": "before"}})
        create_policy(api, "before", "orders-api", {**API_READER, "mode": "enforce"})
        wait_for(lambda: condition(get_policy(api, "before", "orders-api"), "Ready"), timeout=30)

        own_cluster.control_plane.restart_apiserver(down_seconds=15)
        back = time.monotonic()
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": "after"}})
        create_policy(api, "after", "orders-api", {**API_READER, "mode": "enforce"})

        def reconciled() -> bool:
            ready = condition(get_policy(api, "after", "orders-api"), "Ready")
            return bool(ready and ready["reason"] == "Reconciled")

        wait_for(reconciled, timeout=60, interval=0.1)
        converged = time.monotonic() - back
        print(f"policy converged {converged:.1f}s after the API server was back")
    assert runner.exit_code == 0, runner.output
    outage_lines = [line for line in runner.output.splitlines() if "API server unreachable" in line]
    tracebacks = runner.output.count("Traceback")
    print(f"outage log lines: {len(outage_lines)}, tracebacks: {tracebacks}")
    assert converged < CONVERGES_WITHIN, f"converged only after {converged:.1f}s"
    assert 1 <= len(outage_lines) <= 3, outage_lines
    assert tracebacks <= 2, runner.output[-4000:]
