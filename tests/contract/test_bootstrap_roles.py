"""The shipped bootstrap ClusterRoles (engine/rbac/bootstrap_roles.json) equal what kube-apiserver serves.

`make generate` writes the file from a real control plane (scripts/generate_bootstrap_roles.py); the first
test checks the committed file against the running kube-apiserver of the test session (so it needs the
real control plane and carries the cluster marker too), the second its form without a cluster.
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest
from scripts.generate_bootstrap_roles import DATA_PATH, served_bootstrap_roles

from access_hygiene.engine.rbac.bootstrap_roles import bootstrap_document, render_document
from tests.conftest import Cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.contract
@pytest.mark.cluster
def test_committed_bootstrap_roles_equal_the_running_kube_apiserver(fresh_cluster: Cluster) -> None:
    with fresh_cluster.api_client() as api:
        roles, version = served_bootstrap_roles(api)
    served = render_document(bootstrap_document(roles, version))
    assert DATA_PATH.read_text() == served, "run `make generate` (scripts/generate_bootstrap_roles.py)"


@pytest.mark.contract
def test_committed_bootstrap_roles_are_normalised_and_match_the_built_version() -> None:
    document: dict[str, Any] = json.loads(DATA_PATH.read_text())
    assert render_document(bootstrap_document(document["clusterRoles"], document["kubernetesVersion"])) == (
        DATA_PATH.read_text()
    )
    built = re.search(r"K8S_VERSION=\"?v?([0-9.]+)", (ROOT / "controlplane" / "build.sh").read_text())
    assert built is not None
    assert document["kubernetesVersion"] == f"v{built.group(1)}"
